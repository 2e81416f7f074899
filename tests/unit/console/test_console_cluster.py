"""The console over a cluster (pure parts): nodes from Node objects and pods, the picture from what the
agents' /v1/ipam said (or did not), the --agent option, and the command's refusals of bad input."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from vpcnet.api import Pod, load_documents
from vpcnet.cli.console.cluster import NodeFacts, cluster_nodes, cluster_topology, parse_agent
from vpcnet.cli.main import app

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {podIP: 10.0.1.20, hostIP: 10.0.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {podIP: 10.244.3.7, hostIP: 10.0.2.9}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: x}
spec: {containers: [{name: c, image: i}]}
"""
NODE1 = {
    "metadata": {
        "name": "n1",
        "labels": {"topology.kubernetes.io/zone": "az-a", "node.kubernetes.io/instance-type": "m5.large"},
    },
    "spec": {"providerID": "aws:///az-a/i-0abc"},
    "status": {
        "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.1.5"}]
    },
}
IPAM = {
    "instanceId": "i-0abc",
    "ready": True,
    "ENIs": [
        {
            "id": "eni-1", "deviceNumber": 0, "primaryIP": "10.0.1.5", "subnet": "subnet-a",
            "subnetCIDR": "10.0.1.0/24", "prefixes": [],
            "ips": [
                {"address": "10.0.1.20", "assigned": True, "cooling": False, "pod": "x/a"},
                {"address": "10.0.1.21", "assigned": False, "cooling": False, "pod": ""},
            ],
        }
    ],
}  # fmt: skip


def pods() -> list[Any]:
    return [r for r in load_documents(PODS.encode(), "test") if isinstance(r, Pod)]


def test_nodes_from_node_objects_and_from_pods() -> None:
    nodes = cluster_nodes([NODE1], pods())
    assert list(nodes) == ["n1", "n2"]
    assert nodes["n1"] == NodeFacts("n1", "10.0.1.5", "az-a", "m5.large", "i-0abc")
    assert nodes["n2"] == NodeFacts("n2", "10.0.2.9")  # only a pod names it: its hostIP is the address


def test_the_picture_places_read_nodes_in_their_subnet_and_the_rest_by_zone() -> None:
    nodes = cluster_nodes([NODE1], pods())
    topo = cluster_topology(nodes, pods(), {"n1": IPAM, "n2": "connection refused"})
    by_id = {s.id: s for s in topo.subnets}
    assert set(by_id) == {"subnet-a", "zone unknown"}
    (n1,) = by_id["subnet-a"].nodes
    assert n1.instance_type == "m5.large" and n1.agent == "ready"
    assert [p.ref for e in n1.enis for p in e.pods] == ["x/a"] and n1.other_pods == ()
    assert n1.enis[0].warm == ("10.0.1.21",)
    (n2,) = by_id["zone unknown"].nodes
    assert n2.agent == "not read: connection refused" and [p.ref for p in n2.other_pods] == ["x/b"]
    assert sorted(p.ref for p in topo.pods()) == ["x/a", "x/b"]  # the pending pod has no address


def test_a_pod_on_no_eni_of_its_read_node_is_drawn_under_it() -> None:
    more = pods() + [
        r
        for r in load_documents(
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: y}\n"
            b"spec: {nodeName: n1, containers: [{name: c, image: i}]}\nstatus: {podIP: 10.244.0.5}\n",
            "t",
        )
        if isinstance(r, Pod)
    ]
    topo = cluster_topology(cluster_nodes([NODE1], more), more, {"n1": IPAM})
    n1 = next(n for n in topo.nodes() if n.name == "n1")
    assert [p.ref for p in n1.other_pods] == ["y/p"]


def test_the_agent_option() -> None:
    assert parse_agent("n1=10.0.1.5:61679") == ("n1", ("10.0.1.5", 61679))
    assert parse_agent("n1=[fd00::5]:61679") == ("n1", ("fd00::5", 61679))
    for bad in ("n1", "n1=10.0.1.5", "=10.0.1.5:1", "n1=10.0.1.5:99999", "n1=:80"):
        with pytest.raises(ValueError, match="NODE=HOST:PORT"):
            parse_agent(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "n1"], "--agent 'n1': expected NODE=HOST:PORT"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: no such file"),
        (["--netns", "vt-no-such-netns"], "--netns vt-no-such-netns: no such network namespace"),
    ],
)
def test_bad_input_is_refused_before_anything_is_served(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["console", *args])
    assert result.exit_code == 2 and message in result.output, result.output
