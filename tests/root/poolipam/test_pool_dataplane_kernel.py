"""Calico mode in the kernel: three nodes (two share a subnet, one is across a router that, like the VPC
fabric, drops pool addresses), pods wired with "cali" veths, addresses from the pool IPAM in a real etcd,
routes rendered from the datastore and applied in each node's namespace. Real pings; a capture shows
VXLAN only across subnets (CrossSubnet), and a node that goes away has its routes withdrawn."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from etcd_fixture import EtcdServer

from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.poolroutes import render, vtep_mac
from vpcnet.dataplane.poolroutes_apply import apply_pool_dataplane
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolnodes import NodeRegistration
from vpcnet.ipam.poolstore import read_pool_config, read_state

pytestmark = pytest.mark.root


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def ns(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", name, *args, check=check)


@dataclass
class Topo:
    tag: str
    nodes: dict[str, tuple[str, str, str]]  # node -> (netns, address, subnet)
    made: list[str]  # every namespace made, removed by name when the test ends

    def netns(self, node: str) -> str:
        return self.nodes[node][0]


@pytest.fixture
def topo() -> Iterator[Topo]:
    tag = "vt" + secrets.token_hex(2)
    made: list[str] = []

    def add_ns(name: str) -> str:
        full = f"{tag}-{name}"
        sh("ip", "netns", "add", full)
        made.append(full)
        ns(full, "ip", "link", "set", "lo", "up")
        return full

    try:
        fab, router = add_ns("fab"), add_ns("rtr")
        ns(fab, "ip", "link", "add", "br0", "type", "bridge")
        ns(fab, "ip", "link", "set", "br0", "up")
        nodes = {
            "n1": (add_ns("n1"), "10.77.1.11", "10.77.1.0/24"),
            "n2": (add_ns("n2"), "10.77.1.12", "10.77.1.0/24"),
            "n3": (add_ns("n3"), "10.77.2.13", "10.77.2.0/24"),
        }
        # Subnet 1: n1, n2 and the router on one bridge; subnet 2: n3 straight to the router.
        for i, (netns, address, subnet) in enumerate(nodes.values()):
            peer_ns = fab if subnet.startswith("10.77.1.") else router
            sh(
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                netns,
                "type",
                "veth",
                "peer",
                "name",
                f"{tag}u{i}",
                "netns",
                peer_ns,
            )
            if peer_ns == fab:
                ns(fab, "ip", "link", "set", f"{tag}u{i}", "master", "br0", "up")
            else:
                ns(router, "ip", "addr", "add", "10.77.2.1/24", "dev", f"{tag}u{i}")
                ns(router, "ip", "link", "set", f"{tag}u{i}", "up")
            ns(netns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            ns(netns, "ip", "link", "set", "eth0", "up")
            gw = "10.77.1.1" if subnet.startswith("10.77.1.") else "10.77.2.1"
            ns(netns, "ip", "route", "add", "default", "via", gw)
            ns(netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(
            "ip",
            "link",
            "add",
            "eth1",
            "netns",
            router,
            "type",
            "veth",
            "peer",
            "name",
            f"{tag}r",
            "netns",
            fab,
        )
        ns(fab, "ip", "link", "set", f"{tag}r", "master", "br0", "up")
        ns(router, "ip", "addr", "add", "10.77.1.1/24", "dev", "eth1")
        ns(router, "ip", "link", "set", "eth1", "up")
        ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Like the VPC fabric: addresses it does not know (the pool's) are dropped.
        ns(router, "iptables", "-A", "FORWARD", "-s", "10.245.0.0/16", "-j", "DROP")
        ns(router, "iptables", "-A", "FORWARD", "-d", "10.245.0.0/16", "-j", "DROP")
        yield Topo(tag, nodes, made)
    finally:
        for name in reversed(made):
            sh("ip", "netns", "del", name, check=False)


def wire_pod(topo: Topo, node: str, pod: str, address: IPv4Address) -> str:
    """A pod namespace with eth0 = address/32, default via 169.254.1.1; the node side is cali<tag><pod>."""
    pod_ns = f"{topo.tag}-{pod}"
    host_if = f"cali{topo.tag[2:]}{pod}"
    sh("ip", "netns", "add", pod_ns)
    topo.made.append(pod_ns)  # so the fixture's finally removes it too
    topo.nodes[pod_ns] = (pod_ns, str(address), "")
    node_ns = topo.netns(node)
    sh(
        "ip",
        "link",
        "add",
        host_if,
        "netns",
        node_ns,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod_ns,
    )
    ns(pod_ns, "ip", "link", "set", "lo", "up")
    ns(pod_ns, "ip", "addr", "add", f"{address}/32", "dev", "eth0")
    ns(pod_ns, "ip", "link", "set", "eth0", "up")
    ns(pod_ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    ns(pod_ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    ns(node_ns, "ip", "link", "set", host_if, "up")
    ns(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1")
    ns(node_ns, "ip", "route", "add", f"{address}/32", "dev", host_if)
    return pod_ns


def ping(src_ns: str, dst: IPv4Address) -> bool:
    # busybox's ping: this machine has no iputils.
    return ns(src_ns, "busybox", "ping", "-c", "2", "-W", "1", str(dst), check=False).returncode == 0


def count_vxlan(netns: str, action: Callable[[], bool]) -> tuple[int, bool]:
    """Packets to UDP 4789 seen on the node's uplink while action runs."""
    cap = subprocess.Popen(
        ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-i", "eth0", "udp port 4789"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # tcpdump attaches
        result = action()
        time.sleep(0.3)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    return len([line for line in out.splitlines() if "VXLAN" in line or ".4789" in line]), result


def test_cross_subnet_vxlan_direct_within_subnet_and_withdrawal(
    topo: Topo, fresh_etcd_server: EtcdServer
) -> None:
    async def setup_and_route(withdraw: str | None = None) -> dict[str, IPv4Address]:
        ds = EtcdDatastore(fresh_etcd_server.settings())
        try:
            store = ResourceStore(ds)
            await store.apply(
                [
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "IPPool",
                        "metadata": {"name": "pods"},
                        "spec": {"cidr": "10.245.0.0/16", "vxlanMode": "CrossSubnet", "natOutgoing": True},
                    }
                ]
            )
            records = {
                name: NodeRecord(name, IPv4Address(addr), IPv4Network(subnet), vtep_mac(name))
                for name, (_, addr, subnet) in topo.nodes.items()
                if name in ("n1", "n2", "n3")
            }
            regs = {name: NodeRegistration(ResourceStore(ds), rec) for name, rec in records.items()}
            for reg in regs.values():
                await reg.register()
            addresses = {}
            for i, name in enumerate(("n1", "n2", "n3")):
                record = await PoolIpam(ResourceStore(ds), name).assign(f"net.p{i}.eth0", "default", f"p{i}")
                addresses[name] = record.address
            if withdraw:
                await regs[withdraw].stop(withdraw=True)
            state = await read_state(ResourceStore(ds))
            config = await read_pool_config(store)
            for name in ("n1", "n2", "n3"):
                if name == withdraw:
                    continue
                desired = render(
                    records[name], state.nodes, [b for b, _ in state.blocks.values()], config.pools
                )
                runner = SubprocessRunner(topo.netns(name))
                stats = await apply_pool_dataplane(desired, runner)
                assert stats.changed
                again = await apply_pool_dataplane(desired, runner)
                assert not again.changed, "a second apply of the same state must change nothing"
            return addresses
        finally:
            await ds.close()

    addresses = asyncio.run(setup_and_route())
    pods = {name: wire_pod(topo, name, f"p{i}", addresses[name]) for i, name in enumerate(("n1", "n2", "n3"))}

    # Same node/subnet: direct, no VXLAN on n1's uplink. Across subnets: VXLAN.
    vx_same, ok_same = count_vxlan(topo.netns("n1"), lambda: ping(pods["n1"], addresses["n2"]))
    assert ok_same, "pod n1 -> pod n2 (same subnet) failed"
    assert vx_same == 0, "traffic within the subnet must not be encapsulated"
    vx_cross, ok_cross = count_vxlan(topo.netns("n1"), lambda: ping(pods["n1"], addresses["n3"]))
    assert ok_cross, "pod n1 -> pod n3 (across the router) failed"
    assert vx_cross > 0, "traffic across subnets must be VXLAN-encapsulated"
    assert ping(pods["n3"], addresses["n2"])
    # Without the VXLAN route the router drops pool addresses: show that the fabric really does.
    ns(topo.netns("n1"), "ip", "route", "replace", f"{addresses['n3']}/32", "via", "10.77.1.1")
    assert not ping(pods["n1"], addresses["n3"]), "the fabric must drop unencapsulated pool traffic"
    ns(topo.netns("n1"), "ip", "route", "del", f"{addresses['n3']}/32")
    # natOutgoing: a pod reaching the router (outside every pool) arrives from its node's address.
    assert ping(pods["n1"], IPv4Address("10.77.1.1"))
    nat = ns(topo.netns("n1"), "iptables-save", "-t", "nat").stdout
    assert "-A vpcn-nat-outgoing -s 10.245.0.0/16 -j MASQUERADE" in nat

    # n3 goes away (its lease revoked): on n1 the routes to its block are withdrawn.
    routes_before = ns(topo.netns("n1"), "ip", "route", "show", "proto", "86").stdout
    assert "vxlan.calico" in routes_before
    asyncio.run(setup_and_route(withdraw="n3"))
    routes_after = ns(topo.netns("n1"), "ip", "route", "show", "proto", "86").stdout
    assert "vxlan.calico" not in routes_after
    assert not ping(pods["n1"], addresses["n3"])
