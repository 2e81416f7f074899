"""Calico mode with IPv6-only pods in a real lab (`lab up --mode calico --ip-family ipv6`): each pod has one
address, from the IPv6 pool, and no IPv4; the agents make the default IPv6 pool (and no IPv4 one); pods
reach each other on a node, within a subnet and across subnets; `lab wait` passes; a NetworkPolicy holds
over IPv6."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest
from lab_fixture import leftovers, pod_doc, running_lab
from test_lab_calico_dual import PLACEMENT, POOL6, Cluster

pytestmark = pytest.mark.root

AGENTS = {"VPCNET_MODE": "calico", "ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_lab(nodes=3, azs=2, agents=True, agent_env=AGENTS, ip_family="ipv6") as lab:
        handle = Cluster(lab, tmp_path_factory.mktemp("calico-ipv6"))
        path = handle.tmp / "pods.yaml"
        docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"]
        docs += [pod_doc(pod, node, "x") for pod, node in PLACEMENT.items()]
        path.write_text("---\n".join(docs))
        out = handle.cli("apply", "-f", str(path))
        assert out.count(" started") == len(PLACEMENT), out
        handle.cli("lab", "wait")
        yield handle
    assert leftovers(lab.layout) == []


def test_pods_have_only_an_ipv6_address_from_the_ipv6_pool(cluster: Cluster) -> None:
    for pod in PLACEMENT:
        (only,) = cluster.ips(pod)
        assert ipaddress.ip_address(only) in POOL6
    pools = json.loads(cluster.cli("get", "ippools", "-o", "json"))
    items = pools.get("items", pools) if isinstance(pools, dict) else pools
    names = {item["metadata"]["name"] for item in items}
    assert names == {"default-ipv6-ippool"}
    addrs = cluster.lab.exec("node1", "ip", "-n", cluster.lab.layout.pod_netns("x", "a"), "-4", "addr").stdout
    assert "inet " not in addrs.replace("inet 127.0.0.1", "")


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_every_pod_reaches_every_pod(cluster: Cluster, protocol: str) -> None:
    assert cluster.probe(6, protocol) == []


def test_policy_holds_for_ipv6_only_pods(cluster: Cluster) -> None:
    only_a = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-a, namespace: x}\n"
        "spec:\n  podSelector: {matchLabels: {pod: d}}\n  ingress:\n  - from:\n"
        "    - podSelector: {matchLabels: {pod: a}}\n"
    )
    cluster.apply(only_a, "only-a.yaml")
    try:
        assert {(src, dst) for src, dst, _ in cluster.probe(6)} == {("x/b", "x/d"), ("x/c", "x/d")}
    finally:
        cluster.cli("delete", "networkpolicy", "x/only-a")
        cluster.cli("lab", "wait")
    assert cluster.probe(6) == []
