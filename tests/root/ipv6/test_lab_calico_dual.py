"""Calico mode in both families in a real lab (`lab up --mode calico --ip-family dual`): every pod gets one
IPv4 address from the IPv4 pool and one IPv6 address from the IPv6 pool (a /122 block of its node), real
packets between pods on one node, within a subnet (a direct route to the peer's IPv6 address) and across
subnets (VXLAN over IPv6 on vxlan-v6.calico), in both families; `lab wait` passes, and a NetworkPolicy
gives the same verdicts over IPv6 as over IPv4 (a policy plane per family, each over the pods' own
addresses of that family)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabCli, leftovers, pod_doc, running_lab

from vpcnet.lab.probe import ProbeEndpoint, Prober

pytestmark = pytest.mark.root

# node1 and node3 are in the first AZ (one subnet), node2 in the second (the topology's round-robin).
PLACEMENT = {"a": "node1", "b": "node1", "c": "node3", "d": "node2"}
AGENTS = {"VPCNET_MODE": "calico", "ENABLE_IPv4": "true", "ENABLE_IPv6": "true"}
POOL4, POOL6 = ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:10:244::/64")


class Cluster(LabCli):
    def pod(self, name: str) -> dict[str, Any]:
        body = json.loads(self.cli("get", "pod", f"x/{name}", "-o", "json"))
        assert isinstance(body, dict)
        return body

    def ips(self, pod: str) -> list[str]:
        return [entry["ip"] for entry in self.pod(pod)["status"]["podIPs"]]

    def netns(self, pod: str) -> str:
        return f"/run/netns/{self.lab.layout.pod_netns('x', pod)}"

    def probe(self, version: int, protocol: str = "TCP") -> list[tuple[str, str, str]]:
        def ip(pod: str) -> str:
            return next(a for a in self.ips(pod) if ipaddress.ip_address(a).version == version)

        endpoints = [ProbeEndpoint(f"x/{pod}", self.netns(pod), ip(pod)) for pod in PLACEMENT]

        async def run() -> Any:
            return await Prober(80, protocol, timeout=2.0, attempts=3).run(endpoints, endpoints)

        report = asyncio.run(run())
        return [(r.source, r.target, r.detail) for r in report.results if not r.ok]

    def routes6(self, node: str) -> str:
        return self.lab.exec(node, "ip", "-6", "route", "show", "proto", "86").stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_lab(nodes=3, azs=2, agents=True, agent_env=AGENTS, ip_family="dual") as lab:
        handle = Cluster(lab, tmp_path_factory.mktemp("calico-dual"))
        path = handle.tmp / "pods.yaml"
        docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"]
        docs += [pod_doc(pod, node, "x") for pod, node in PLACEMENT.items()]
        path.write_text("---\n".join(docs))
        out = handle.cli("apply", "-f", str(path))
        assert out.count(" started") == len(PLACEMENT), out
        handle.cli("lab", "wait")
        yield handle
    assert leftovers(lab.layout) == []


def test_pods_get_one_address_of_each_family_from_the_pools(cluster: Cluster) -> None:
    blocks6 = set()
    for pod in PLACEMENT:
        v4, v6 = (ipaddress.ip_address(ip) for ip in cluster.ips(pod))
        assert v4 in POOL4 and v6 in POOL6, (pod, v4, v6)
        assert cluster.pod(pod)["status"]["podIP"] == str(v4)
        blocks6.add((PLACEMENT[pod], ipaddress.ip_network(f"{v6}/122", strict=False)))
    assert len({node for node, _ in blocks6}) == len({block for _, block in blocks6}) == 3  # a /122 each
    addrs = cluster.lab.exec("node1", "ip", "-n", cluster.lab.layout.pod_netns("x", "a"), "addr").stdout
    assert all(f"{ip}/{32 if ':' not in ip else 128}" in addrs for ip in cluster.ips("a"))
    routes = cluster.lab.exec(
        "node1", "ip", "-n", cluster.lab.layout.pod_netns("x", "a"), "-6", "route"
    ).stdout
    assert "default via fe80::1 dev eth0" in routes


def test_ipv6_blocks_route_direct_within_the_subnet_and_over_vxlan_v6_across(cluster: Cluster) -> None:
    c6 = ipaddress.ip_network(f"{cluster.ips('c')[1]}/122", strict=False)
    d6 = ipaddress.ip_network(f"{cluster.ips('d')[1]}/122", strict=False)
    mac = cluster.lab.imds_get("node3", "/latest/meta-data/mac")[1].strip()
    node3_v6 = cluster.lab.imds_get("node3", f"/latest/meta-data/network/interfaces/macs/{mac}/ipv6s")[
        1
    ].split()[0]
    routes = cluster.routes6("node1")
    assert f"{c6} via {node3_v6} dev eth0" in routes, routes
    assert f"{d6} via" in routes and "dev vxlan-v6.calico" in routes.split(f"{d6} via", 1)[1].splitlines()[0]
    link = cluster.lab.exec("node1", "ip", "-d", "link", "show", "vxlan-v6.calico").stdout
    assert "vxlan id 4096" in link and "dstport 4789" in link


@pytest.mark.parametrize("version", [6, 4])
def test_every_pod_reaches_every_pod_in_both_families(cluster: Cluster, version: int) -> None:
    assert cluster.probe(version) == []


def test_policy_holds_in_both_families_with_the_same_verdicts(cluster: Cluster) -> None:
    only_a = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-a, namespace: x}\n"
        "spec:\n  podSelector: {matchLabels: {pod: d}}\n  ingress:\n  - from:\n"
        "    - podSelector: {matchLabels: {pod: a}}\n"
    )
    cluster.apply(only_a, "only-a.yaml")
    try:
        denied = {("x/b", "x/d"), ("x/c", "x/d")}  # d admits a only: its two addresses are one pod
        assert {(src, dst) for src, dst, _ in cluster.probe(6)} == denied
        assert {(src, dst) for src, dst, _ in cluster.probe(4)} == denied
    finally:
        cluster.cli("delete", "networkpolicy", "x/only-a")
        cluster.cli("lab", "wait")
    assert cluster.probe(6) == [] and cluster.probe(4) == []
