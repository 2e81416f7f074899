"""IPv6 in the namespace fabric, with real packets: a dual-stack VPC built from the EC2 engine and the fabric
(no daemon, no etcd), three nodes over two subnets. An address or /80 assigned through EC2 is delivered to
its ENI only; unassigned addresses get nothing; a spoofed source is dropped; the internet host answers
through the egress-only gateway and cannot open a connection inward; IPv4 still works beside it."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import string
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vpcnet.lab import netns
from vpcnet.lab.ec2.model import Instance
from vpcnet.lab.ec2.state import Cloud
from vpcnet.lab.fabric import NODE_TAG, Fabric
from vpcnet.lab.fabric6 import INTERNET6_HOST_ADDRESS
from vpcnet.lab.layout import LabLayout

pytestmark = pytest.mark.root

VPC = "10.0.0.0/16"
VPC6 = "2001:db8:1f14:8c00::/56"
SUBNETS = {"a": ("10.0.0.0/20", "2001:db8:1f14:8c01::/64"), "b": ("10.0.16.0/20", "2001:db8:1f14:8c02::/64")}
NODES = {"n1": "a", "n2": "a", "n3": "b"}


@dataclass
class Lab6:
    layout: LabLayout
    cloud: Cloud
    fabric: Fabric
    instances: dict[str, Instance]

    def ns(self, node: str) -> str:
        return self.layout.node_netns(node)

    def eni(self, node: str) -> str:
        return self.instances[node].primary_eni_id

    def address6(self, node: str) -> str:
        return self.cloud.eni(self.eni(node)).ipv6_addresses[0]

    def run(self, node_ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", node_ns, *argv], capture_output=True, text=True, timeout=30, check=False
        )

    def ping(self, node_ns: str, dst: str, src: str | None = None) -> bool:
        argv = ["busybox", "ping", "-6" if ":" in dst else "-4", "-c", "1", "-W", "1", dst]
        if src:
            argv[2:2] = ["-I", src]
        # The first try may wait for neighbour resolution: allow a few.
        return any(self.run(node_ns, *argv).returncode == 0 for _ in range(3))

    def add_address(self, node: str, address: str) -> None:
        netns.ip_batch([f"address add {address}/128 dev lo nodad"], self.ns(node))


@pytest.fixture(scope="module")
def lab6() -> Iterator[Lab6]:
    prefix = "v6" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    layout = LabLayout(prefix)
    fabric = Fabric(layout)
    try:
        fabric.create_base(VPC, list(NODES), vpc_ipv6_cidr=VPC6)
        cloud = Cloud(hooks=fabric)
        fabric.set_subnet_lookup(lambda sid: cloud.subnet(sid).cidr)
        fabric.set_subnet6_lookup(lambda sid: cloud.subnet(sid).ipv6_cidr)
        vpc = cloud.create_vpc(VPC, ipv6_cidr=VPC6)
        subnet_ids = {
            name: cloud.create_subnet(vpc.id, v4, f"{cloud.region}{name}", ipv6_cidr=v6).id
            for name, (v4, v6) in SUBNETS.items()
        }
        instances = {
            node: cloud.launch_instance("m5.large", subnet_ids[az], tags={NODE_TAG: node})
            for node, az in NODES.items()
        }
        yield Lab6(layout, cloud, fabric, instances)
    finally:
        fabric.close()
        names = [n for n in netns.list_netns() if layout.owns_netns(n)]
        netns.ip_batch([f"netns del {n}" for n in names], force=True)


def test_nodes_reach_each_other_over_ipv6_in_and_across_subnets(lab6: Lab6) -> None:
    assert lab6.ping(lab6.ns("n1"), lab6.address6("n2"))
    assert lab6.ping(lab6.ns("n3"), lab6.address6("n1"))
    # and IPv4 as before
    assert lab6.ping(lab6.ns("n1"), lab6.cloud.eni(lab6.eni("n3")).primary_ip)


def test_assigned_address_and_prefix_are_delivered_unassigned_ones_are_not(lab6: Lab6) -> None:
    eni2 = lab6.eni("n2")
    (extra,), _ = lab6.cloud.assign_ipv6_addresses(eni2, address_count=1)
    _, (prefix,) = lab6.cloud.assign_ipv6_addresses(eni2, prefix_count=1)
    pod = str(ipaddress.IPv6Network(prefix).network_address + 0x2A)
    stray = str(ipaddress.IPv6Network(SUBNETS["a"][1]).network_address + 0xBEEF)
    for a in (extra, pod, stray):
        lab6.add_address("n2", a)
    assert lab6.ping(lab6.ns("n1"), extra)
    assert lab6.ping(lab6.ns("n1"), pod)
    assert lab6.ping(lab6.ns("n3"), pod)
    assert not lab6.ping(lab6.ns("n1"), stray)
    # unassigned again: the VPC stops delivering at once
    lab6.cloud.unassign_ipv6_addresses(eni2, prefixes=[prefix])
    assert not lab6.ping(lab6.ns("n1"), pod)


def _udp_delivered(lab6: Lab6, src_node: str, src_ip: str, dst_node: str, dst_ip: str) -> bool:
    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((dst_ip, 0))
        s.settimeout(0.2)
        return s

    rx = netns.run_in_netns(lab6.ns(dst_node), listen)
    port = rx.getsockname()[1]

    def send() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
            tx.bind((src_ip, 0))
            for _ in range(3):
                tx.sendto(b"hello", (dst_ip, port))

    with contextlib.closing(rx):
        netns.run_in_netns(lab6.ns(src_node), send)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if rx.recvfrom(64)[0] == b"hello":
                    return True
        return False


def test_spoofed_ipv6_source_is_dropped(lab6: Lab6) -> None:
    spoof = str(ipaddress.IPv6Network(SUBNETS["a"][1]).network_address + 0x5F00F)
    lab6.add_address("n1", spoof)
    dst = lab6.address6("n2")
    assert _udp_delivered(lab6, "n1", lab6.address6("n1"), "n2", dst)
    assert not _udp_delivered(lab6, "n1", spoof, "n2", dst)
    # with SourceDestCheck off (a NAT or a router instance) the VPC lets it through
    lab6.cloud.modify_network_interface_attribute(lab6.eni("n1"), source_dest_check=False)
    try:
        assert _udp_delivered(lab6, "n1", spoof, "n2", dst)
    finally:
        lab6.cloud.modify_network_interface_attribute(lab6.eni("n1"), source_dest_check=True)


def test_internet_over_ipv6_is_egress_only(lab6: Lab6) -> None:
    assert lab6.ping(lab6.ns("n1"), INTERNET6_HOST_ADDRESS)
    assert not lab6.ping(lab6.layout.internet_netns, lab6.address6("n1"))
