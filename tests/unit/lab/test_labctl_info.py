"""lab.json round trip and the checks `lab up` makes against a running lab (pure parts of labctl)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vpcnet.lab import labctl
from vpcnet.lab.labctl import LabError, LabInfo, NodeInfo, _same_shape, layout_for
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.topology import build_topology


def info_for(nodes: int = 3, azs: int = 2, instance_type: str = "t3.medium") -> LabInfo:
    topo = build_topology(nodes=nodes, azs=azs, instance_type=instance_type)
    return LabInfo(
        prefix="vt01",
        vpc_id="vpc-1",
        vpc_cidr=topo.vpc_cidr,
        region=topo.region,
        subnets={s.name: {"id": f"subnet-{i}", "cidr": s.cidr, "az": s.az, "role": s.role}
                 for i, s in enumerate(topo.subnets)},
        nodes=[
            NodeInfo(n.name, f"vt01-{n.name}", f"i-{i}", n.instance_type, n.az, n.subnet, "subnet-x",
                     topo.subnet(n.subnet).cidr, f"10.0.0.{4 + i}", "/c", "/b", "/s", "/l")
            for i, n in enumerate(topo.nodes)
        ],
        endpoints={"ec2": "http://10.0.255.254"},
        internet_host="198.51.100.100",
        agents=False,
    )  # fmt: skip


def test_info_round_trips_through_json() -> None:
    info = info_for()
    assert LabInfo.from_json(info.to_json()) == info
    assert info.to_json()["version"] == 1


def test_unknown_node_names_the_known_ones() -> None:
    with pytest.raises(LabError, match="node1, node2, node3"):
        info_for().node("node9")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"nodes": 2}, "3 nodes, 2 were asked"),
        ({"instance_type": "m5.large"}, "m5.large was asked"),
        ({"azs": 3}, "2 AZs, 3 were asked"),
    ],
)
def test_a_running_lab_of_another_shape_is_reported(kwargs: dict[str, object], needle: str) -> None:
    assert _same_shape(info_for(), build_topology(**kwargs)) is not None  # type: ignore[arg-type]
    assert needle in (_same_shape(info_for(), build_topology(**kwargs)) or "")  # type: ignore[arg-type]


def test_same_shape_is_none() -> None:
    assert _same_shape(info_for(), build_topology()) is None


def test_prefix_from_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPCNET_LAB", "vtenv")
    assert layout_for().prefix == "vtenv"
    assert layout_for("vtarg").prefix == "vtarg"
    monkeypatch.delenv("VPCNET_LAB")
    assert layout_for().prefix == "vpcl"
    with pytest.raises(ValueError, match="lowercase"):
        layout_for("No-Good")


def test_agent_env_keeps_knobs_drops_the_callers_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from vpcnet.lab.labctl import LAB_CREDENTIALS, agent_env

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALACCOUNT")
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("WARM_IP_TARGET", "3")
    monkeypatch.setenv("AWS_VPC_K8S_CNI_EXTERNALSNAT", "true")
    info = info_for()
    info = LabInfo.from_json({**info.to_json(), "endpoints": {
        "ec2": "http://10.0.255.254", "imds": "http://169.254.169.254", "etcd": "http://10.0.255.253:2379"},
        "agent_settings": {"VPCNET_MODE": "calico", "WARM_IP_TARGET": "5"}})  # fmt: skip
    env = agent_env(layout_for("vt01"), "node2", info)
    assert env["AWS_ACCESS_KEY_ID"] == LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert "AWS_PROFILE" not in env
    assert env["AWS_VPC_K8S_CNI_EXTERNALSNAT"] == "true"
    assert env["WARM_IP_TARGET"] == "5" and env["VPCNET_MODE"] == "calico"  # the lab's settings win
    assert env["AWS_EC2_ENDPOINT"] == "http://10.0.255.254"
    assert env["VPCNET_DATASTORE_ENDPOINTS"] == "http://10.0.255.253:2379"
    assert env["VPCNET_NODE_NAME"] == "node2"
    assert env["VPCNET_AGENT_SOCKET"].endswith("/vt01/nodes/node2/agent.sock")


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"AWS_VPC_ENI_MTU": "abc"}, "AWS_VPC_ENI_MTU='abc': expected an integer"),
        ({"WARM_IP_TARGET": "-1"}, "WARM_IP_TARGET"),
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "eth"}, "AWS_VPC_K8S_CNI_VETHPREFIX"),
    ],
)
def test_bad_agent_settings_are_refused_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: dict[str, str], needle: str
) -> None:
    """The agents would never turn Ready (lab up waited a minute, then pointed at logs it removed)."""
    from vpcnet.lab import layout as layout_module

    monkeypatch.setattr(layout_module, "RUN_ROOT", tmp_path)
    monkeypatch.setattr(labctl, "_up", lambda *_a, **_k: pytest.fail("the lab was being built"))
    lab = LabLayout("aubad")
    with pytest.raises(labctl.LabError, match=needle):
        labctl.up(build_topology(nodes=1), lab, agents=True, agent_settings=settings)
    assert list(tmp_path.iterdir()) == []
    # The settings the lab's own tests use pass.
    calico = {"VPCNET_MODE": "calico", "AWS_VPC_K8S_CNI_VETHPREFIX": "cali"}
    calico_settings = {**calico, "CALICO_IPV4POOL_CIDR": "10.244.0.0/16"}
    assert labctl.lab_datastore(None, calico_settings) == "kubernetes"
    labctl.check_agent_settings(lab, calico_settings, "etcd")
    labctl.check_agent_settings(lab, calico_settings, "kubernetes")
    assert labctl.lab_datastore(None, {}) == "kubernetes"
    labctl.check_agent_settings(lab, {}, "kubernetes")
    with pytest.raises(labctl.LabError, match="--datastore 'consul': expected one of kubernetes, etcd"):
        labctl.up(build_topology(nodes=1), lab, datastore="consul")


def test_the_agents_environment_names_the_datastore(tmp_path: Path) -> None:
    lab = LabLayout("audst")
    endpoints = {"ec2": "http://ec2.lab", "imds": "http://169.254.169.254", "etcd": "http://etcd.lab:2379"}
    kube = labctl._agent_env(lab, "node1", endpoints, {}, "kubernetes", tmp_path / "kc")
    assert (kube["VPCNET_DATASTORE_TYPE"], kube["KUBECONFIG"]) == ("kubernetes", str(tmp_path / "kc"))
    etcd = labctl._agent_env(lab, "node1", endpoints, {}, "etcd", tmp_path / "kc")
    assert etcd["VPCNET_DATASTORE_TYPE"] == "etcd" and "KUBECONFIG" not in etcd


def test_a_node_that_does_not_turn_ready_shows_its_agent_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """lab up removes a lab that failed while being built, logs included: the error carries the log's end."""
    from vpcnet.lab import layout as layout_module

    monkeypatch.setattr(layout_module, "RUN_ROOT", tmp_path)
    monkeypatch.setattr(labctl, "AGENT_READY_TIMEOUT", 0.05)
    lab = LabLayout("aulog")
    log = lab.agent_log("node1")
    log.parent.mkdir(parents=True)
    log.write_text("starting\nTraceback (most recent call last):\nRuntimeError: no IMDS\n")
    with pytest.raises(LabError, match=r"(?s)node1: .*not ready.* ends with:\n.*RuntimeError: no IMDS"):
        endpoints = {"ec2": "http://10.0.255.254", "imds": "http://169.254.169.254", "etcd": "http://e:2379"}
        labctl.install_cni(lab, dataclasses.replace(info_for(nodes=1), endpoints=endpoints), ["node1"])
