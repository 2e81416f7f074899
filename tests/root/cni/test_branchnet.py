"""A branch-ENI pod's wiring in real namespaces (dataplane/branchnet.py): a node with a `vlan.eth.7` whose
other end stands for the VPC (the gateway), a pod wired onto it in either enforcing mode; traffic from the
"VPC" reaches the pod and its answer goes back out of the device; unwire leaves no rule, route or veth."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from vpcnet.dataplane.branchnet import BranchNetwork, BranchSpec
from vpcnet.dataplane.podnet import PodNetwork, PodSpec, WiringError
from vpcnet.lab.podserver import in_netns

pytestmark = pytest.mark.root

SUBNET = IPv4Network("10.77.0.0/24")
GATEWAY, POD_IP = "10.77.0.1", IPv4Address("10.77.0.10")
VLAN = 7


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    prefix = f"vtb{secrets.token_hex(3)}"
    node, pod, vpc = f"{prefix}-node", f"{prefix}-pod", f"{prefix}-vpc"
    try:
        for name in (node, pod, vpc):
            _ip("netns", "add", name)
        _ip(
            "-n",
            node,
            "link",
            "add",
            f"vlan.eth.{VLAN}",
            "type",
            "veth",
            "peer",
            "name",
            "vpc0",
            "netns",
            vpc,
        )
        _ip("-n", vpc, "address", "add", f"{GATEWAY}/24", "dev", "vpc0")
        _ip("-n", vpc, "link", "set", "vpc0", "up")
        _ip("-n", node, "link", "set", "lo", "up")
        subprocess.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        mac = _ip("-n", node, "-j", "link", "show", f"vlan.eth.{VLAN}")
        # The VPC knows which port owns the pod's address (the lab's fabric: a neighbour entry).
        _ip("-n", vpc, "neigh", "add", str(POD_IP), "lladdr", json.loads(mac)[0]["address"], "dev", "vpc0")
        yield node, pod, vpc
    finally:
        for name in (node, pod, vpc):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _connect(vpc: str, port: int) -> str:
    with in_netns(f"/run/netns/{vpc}"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    try:
        sock.connect((str(POD_IP), port))
        return "open"
    except ConnectionRefusedError:
        return "refused"  # the pod's RST came back out of the device: both ways work
    except OSError as exc:
        return f"failed: {exc}"
    finally:
        sock.close()


@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_wire_reach_unwire(namespaces: tuple[str, str, str], mode: str) -> None:
    node, pod, vpc = namespaces

    async def go() -> None:
        podnet = PodNetwork(f"/run/netns/{node}")
        await podnet.open()
        try:
            branches = BranchNetwork(podnet)
            veth = "vlanbranch0" if mode == "strict" else "enibranch0"
            pod_spec = PodSpec(f"/run/netns/{pod}", "eth0", veth, POD_IP, VLAN + 100, 9001)
            spec = BranchSpec(pod_spec, VLAN, SUBNET, mode)
            await branches.wire(spec)
            assert await branches.check(spec) == []
            rules = _ip("-n", node, "rule")
            if mode == "strict":
                assert f"iif vlan.eth.{VLAN} lookup {VLAN + 100}" in rules and f"iif {veth} lookup" in rules
                assert str(POD_IP) not in _ip("-n", node, "route")  # the node reaches it through the VPC only
            else:
                assert f"from {POD_IP} lookup {VLAN + 100}" in rules and f"to {POD_IP} lookup main" in rules
            assert f"default via {GATEWAY} dev vlan.eth.{VLAN}" in _ip(
                "-n", node, "route", "show", "table", "107"
            )
            assert await asyncio.to_thread(_connect, vpc, 9) == "refused"
            await branches.unwire(spec, veth)
            await branches.unwire(spec, veth)  # twice: nothing left to do, no error
            await podnet.drain()
            assert "107" not in _ip("-n", node, "rule")
            assert not _ip("-n", node, "route", "show", "table", "107").strip()
            assert veth not in _ip("-n", node, "link")
        finally:
            await podnet.close()

    asyncio.run(go())


def test_a_branch_that_is_not_on_the_node_is_a_wiring_error(namespaces: tuple[str, str, str]) -> None:
    node, pod, _ = namespaces

    async def go() -> None:
        podnet = PodNetwork(f"/run/netns/{node}")
        await podnet.open()
        try:
            spec = BranchSpec(
                PodSpec(f"/run/netns/{pod}", "eth0", "vlanx", POD_IP, 109, 9001), 9, SUBNET, "strict"
            )
            with pytest.raises(WiringError, match=r"vlan\.eth\.9 is not on the node"):
                await BranchNetwork(podnet).wire(spec)
            assert "vlanx" not in _ip("-n", node, "link")  # nothing was made
        finally:
            await podnet.close()

    asyncio.run(go())
