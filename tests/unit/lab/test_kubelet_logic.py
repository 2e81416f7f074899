"""The lab kubelet's pure parts: scheduling, sandbox ids, ports, status patches, lab state, convergence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcnet.api import load_documents
from vpcnet.api.core import Pod
from vpcnet.lab import converge, kubelet
from vpcnet.lab import layout as layout_module
from vpcnet.lab.kubelet import PodRecord, SchedulingError, schedule
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.podserver import PortSpec


def make_pod(name: str, node: str | None = None, ports: str = "[{containerPort: 80}]") -> Pod:
    node_line = f"\n  nodeName: {node}" if node else ""
    (pod,) = load_documents(
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x}}
spec:{node_line}
  containers:
  - name: c
    ports: {ports}
"""
    )
    assert isinstance(pod, Pod)
    return pod


def test_spread_fills_the_emptiest_node_first() -> None:
    pods = [make_pod(n) for n in "abcdef"]
    placed = schedule(pods, ["n1", "n2", "n3"], {"n1": 2})
    assert [placed[f"x/{n}"] for n in "abcdef"] == ["n2", "n3", "n2", "n3", "n1", "n2"]


def test_node_name_is_kept_and_counted() -> None:
    pods = [make_pod("a"), make_pod("b", "n1"), make_pod("c", "n1")]
    assert schedule(pods, ["n1", "n2"]) == {"x/b": "n1", "x/c": "n1", "x/a": "n2"}


def test_unknown_node_is_refused_with_the_field() -> None:
    with pytest.raises(
        SchedulingError, match=r"Pod x/a: spec.nodeName: 'n9' is not a lab node \(nodes: n1, n2\)"
    ):
        schedule([make_pod("a", "n9")], ["n1", "n2"])
    with pytest.raises(SchedulingError, match="no lab nodes"):
        schedule([make_pod("a")], [])


_POOL = [make_pod(f"p{i}") for i in range(40)]


@given(st.integers(0, 40), st.integers(1, 6))
def test_spread_is_balanced(n_pods: int, n_nodes: int) -> None:
    nodes = [f"n{i}" for i in range(n_nodes)]
    placed = schedule(_POOL[:n_pods], nodes)
    counts = [list(placed.values()).count(node) for node in nodes]
    assert max(counts) - min(counts) <= 1


def test_container_id_is_stable_and_per_incarnation() -> None:
    one = kubelet.container_id("x", "a", "uid-1")
    assert one == kubelet.container_id("x", "a", "uid-1")
    assert one != kubelet.container_id("x", "a", "uid-2")
    assert len(one) == 64 and int(one, 16) >= 0


def test_ports_and_host_port_mappings() -> None:
    pod = make_pod(
        "a",
        ports="[{containerPort: 80}, {containerPort: 80, protocol: UDP}, {containerPort: 81, hostPort: 8081},"
        " {containerPort: 80}]",
    )
    assert kubelet.pod_ports(pod) == [PortSpec(80, "TCP"), PortSpec(80, "UDP"), PortSpec(81, "TCP")]
    assert kubelet.host_port_mappings(pod) == ({"hostPort": 8081, "containerPort": 81, "protocol": "tcp"},)


def record(**overrides: Any) -> PodRecord:
    values: dict[str, Any] = dict(
        namespace="x", name="a", uid="u", node="n1", container_id="c" * 64, netns="vt-pod-x-a", ip="10.0.0.9"
    )
    values.update(overrides)
    return PodRecord(**values)


def test_status_patch_writes_the_kubelet_view_and_failed_patch_clears_it() -> None:
    body = make_pod("a").to_dict()
    running = kubelet.pod_status_patch(body, record(interface="eni0123456789a", eni="eni-1"), "10.0.0.4")
    assert running["spec"]["nodeName"] == "n1"
    status = running["status"]
    since = status["startTime"]
    assert status == {
        "phase": "Running",
        "hostIP": "10.0.0.4",
        "podIP": "10.0.0.9",
        "podIPs": [{"ip": "10.0.0.9"}],
        "startTime": since,
        "conditions": kubelet.pod_conditions(True, since),
    }
    assert {c["type"] for c in status["conditions"]} == {
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    }
    # A second pass over a running pod changes nothing (no new transition times).
    assert (
        kubelet.pod_status_patch(running, record(interface="eni0123456789a", eni="eni-1"), "10.0.0.4")
        == running
    )
    annotations = running["metadata"]["annotations"]
    assert annotations[kubelet.ANNOTATION_ENI] == "eni-1"
    assert annotations[kubelet.ANNOTATION_POD_IPS] == "10.0.0.9"
    assert "status" not in body  # the input is not changed
    failed = kubelet.pod_failed_patch(running, "n1", "CNI ADD failed")
    assert failed["status"]["phase"] == "Pending" and failed["status"]["message"] == "CNI ADD failed"
    assert {c["type"]: c["status"] for c in failed["status"]["conditions"]}["Ready"] == "False"
    assert "podIP" not in failed["status"]
    assert not set(failed["metadata"].get("annotations", {})) & set(kubelet.KUBELET_ANNOTATIONS)
    # The stored Pod still validates after the kubelet's writes.
    (again,) = load_documents(json.dumps(running))
    assert isinstance(again, Pod) and again.pod_ip == "10.0.0.9"


def test_result_eni() -> None:
    assert kubelet.result_eni({"vpcnet": {"eni": "eni-1"}}) == "eni-1"
    assert kubelet.result_eni({"ips": []}) is None


@pytest.fixture
def lab_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabLayout:
    monkeypatch.setattr(layout_module, "RUN_ROOT", tmp_path)
    layout = LabLayout("vtunit")
    layout.run_dir.mkdir(parents=True)
    return layout


def test_lab_nodes_reads_the_state_file(lab_layout: LabLayout) -> None:
    assert kubelet.lab_nodes(lab_layout) == []
    state = {"nodes": [{"name": "node1", "az": "us-east-1a", "primary_ip": "10.0.0.4", "netns": "x"}]}
    lab_layout.state_file.write_text(json.dumps(state))
    assert kubelet.lab_nodes(lab_layout) == [kubelet.LabNode("node1", "us-east-1a", "10.0.0.4")]
    lab_layout.state_file.write_text("{")
    with pytest.raises(RuntimeError, match="unreadable"):
        kubelet.lab_nodes(lab_layout)


def test_records_round_trip(lab_layout: LabLayout) -> None:
    runtime = kubelet.PodRuntime(lab_layout)
    rec = record(ports=[{"port": 80, "protocol": "TCP"}], cni_result={"ips": [{"address": "10.0.0.9/32"}]})
    runtime.save(rec)
    (lab_layout.node_dir("n1") / "pods" / "junk.json").write_text("not json")
    assert runtime.records(["n1", "n2"]) == [rec]
    assert rec.port_specs() == [PortSpec(80, "TCP")]


def test_wait_for_revision(lab_layout: LabLayout) -> None:
    result = converge.wait_for_revision(lab_layout, ["n1", "n2"], 5, timeout=0.0)
    assert not result.converged and result.lagging() == {"n1": None, "n2": None}
    converge.write_status(lab_layout, "n1", 7)
    converge.write_status(lab_layout, "n2", 4)
    result = converge.wait_for_revision(lab_layout, ["n1", "n2"], 5, timeout=0.0)
    assert result.lagging() == {"n2": 4}
    converge.write_status(lab_layout, "n2", 5, ready=True)
    assert converge.wait_for_revision(lab_layout, ["n1", "n2"], 5, timeout=1.0).converged
    converge.status_path(lab_layout, "n1").write_text('{"revision": true}')
    assert converge.applied_revision(lab_layout, "n1") is None


def test_eni_owners_by_address_and_prefix() -> None:
    from vpcnet.lab.eniinfo import eni_owners

    interfaces = [
        {
            "NetworkInterfaceId": "eni-1",
            "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.4"}, {"PrivateIpAddress": "10.0.0.9"}],
        },
        {
            "NetworkInterfaceId": "eni-2",
            "PrivateIpAddresses": [],
            "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.1.16/28"}],
        },
    ]
    owners = eni_owners(interfaces, ["10.0.0.9", "10.0.1.20", "10.244.0.3"])
    assert owners == {"10.0.0.9": "eni-1", "10.0.1.20": "eni-2", "10.244.0.3": ""}


def test_del_gets_the_port_mappings_add_had(lab_layout: LabLayout) -> None:
    """The pod object is gone when the kubelet stops a deleted pod: DEL's sandbox takes the hostPort
    mappings from the record (portmap's DEL removes nothing without them)."""
    runtime = kubelet.PodRuntime(lab_layout)
    mappings = [{"hostPort": 8081, "containerPort": 81, "protocol": "tcp"}]
    rec = record(port_mappings=mappings)
    runtime.save(rec)
    (saved,) = runtime.records(["n1"])
    assert runtime.sandbox(saved).port_mappings == tuple(mappings)
    assert runtime.sandbox(record()).port_mappings == ()


def test_wait_believes_a_status_only_while_its_writer_lives(lab_layout: LabLayout) -> None:
    """Issue 14, defect 3: a status file left by a dead agent is no report (pid gone, or pid reused)."""
    import os
    import subprocess
    import sys

    path = converge.status_path(lab_layout, "n1")
    path.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import json, sys; from vpcnet.agent.liveness import own_stamp; "
        "open(sys.argv[1], 'w').write(json.dumps({'revision': 9, **own_stamp()}))"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    written = json.loads(converge.status_path(lab_layout, "n1").read_text())
    assert written["revision"] == 9 and written["pid"] > 0  # a real agent's word, now dead
    assert converge.applied_revision(lab_layout, "n1") is None
    assert not converge.wait_for_revision(lab_layout, ["n1"], 5, timeout=0.0).converged
    reused = {**written, "pid": os.getpid()}  # the pid now names another process: its start time differs
    converge.status_path(lab_layout, "n1").write_text(json.dumps(reused))
    assert converge.applied_revision(lab_layout, "n1") is None
    converge.write_status(lab_layout, "n1", 9)  # this live process
    assert converge.applied_revision(lab_layout, "n1") == 9
