"""Branch-ENI pods on the CNI side: which pods take the branch path, the VLAN id carried in the result for
DEL (the VPC CNI's dummy interface), and "try again later" while the branch is not made."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from vpcnet.api.sgpolicy import PodEni
from vpcnet.cni.branch_pods import BranchPending, BranchPods, dummy_interface, prev_result_vlan
from vpcnet.cni.shim import encode_request
from vpcnet.cni.spec import ERR_TRY_AGAIN_LATER, ERR_WIRING_FAILED, CniError, parse_request
from vpcnet.dataplane.branchnet import BranchSpec
from vpcnet.dataplane.podnet import WiredPod
from vpcnet.ipam.types import IpamKey

ENI = PodEni("eni-b", "0a:00:00:00:00:02", IPv4Address("10.0.1.20"), 4, IPv4Network("10.0.0.0/20"))


class Lookup:
    def __init__(self, answer: PodEni | Exception | None) -> None:
        self.answer = answer

    async def pod_eni(self, namespace: str, name: str) -> PodEni | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Network:
    def __init__(self) -> None:
        self.wired: list[BranchSpec] = []
        self.unwired: list[tuple[BranchSpec, str | None]] = []

    async def wire(self, spec: BranchSpec) -> WiredPod:
        self.wired.append(spec)
        return WiredPod(spec.pod.host_veth, "0a:00:00:00:00:aa", "0a:00:00:00:00:bb", 5)

    async def unwire(self, spec: BranchSpec, host_veth: str | None) -> None:
        self.unwired.append((spec, host_veth))


def _request(command: str, prev: dict[str, Any] | None = None) -> Any:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}
    if prev is not None:
        conf["prevResult"] = prev
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
        "CNI_PATH": "/opt/cni/bin",
    }
    raw = encode_request({k.encode(): v.encode() for k, v in env.items()}, json.dumps(conf).encode())
    return parse_request(raw)


def _pods(lookup: Lookup, network: Network, mode: str = "strict") -> BranchPods:
    return BranchPods(lookup, network, mode, "eni", 9001)  # type: ignore[arg-type]


KEY = IpamKey("vpcnet", "c1", "eth0")


def test_add_wires_a_branch_pod_and_del_finds_its_vlan_in_prev_result() -> None:
    network = Network()
    pods = _pods(Lookup(ENI), network)
    out = asyncio.run(pods.add(_request("ADD"), KEY))
    assert out is not None
    code, _, body = out.partition(b"\n")
    assert code == b"0"
    result = json.loads(body)
    spec = network.wired[0]
    assert (spec.vlan_id, spec.table, str(spec.gateway), spec.pod.address) == (
        4,
        104,
        "10.0.0.1",
        ENI.address,
    )
    assert spec.pod.host_veth.startswith("vlan")  # strict mode's host veth prefix
    assert result["ips"][0]["address"] == "10.0.1.20/32" and result["ips"][0]["interface"] == 1
    assert prev_result_vlan(result) == 4
    # A DEL from another agent (nothing in memory): the VLAN id and address from prevResult.
    fresh = _pods(Lookup(None), network)
    assert asyncio.run(fresh.delete(_request("DEL", result), KEY))
    assert network.unwired[-1][0].table == 104 and network.unwired[-1][0].pod.address == ENI.address


def test_standard_mode_keeps_the_normal_veth_prefix() -> None:
    network = Network()
    asyncio.run(_pods(Lookup(ENI), network, "standard").add(_request("ADD"), KEY))
    assert network.wired[0].pod.host_veth.startswith("eni")


def test_pods_that_are_not_branch_pods_take_the_normal_path() -> None:
    network = Network()
    pods = _pods(Lookup(None), network)
    assert asyncio.run(pods.add(_request("ADD"), KEY)) is None
    assert not asyncio.run(pods.delete(_request("DEL", {"cniVersion": "1.0.0", "interfaces": []}), KEY))
    assert network.wired == [] and network.unwired == []


@pytest.mark.parametrize(
    ("answer", "code"),
    [(BranchPending("waiting"), ERR_TRY_AGAIN_LATER), (ValueError("bad"), ERR_WIRING_FAILED)],
)
def test_a_pending_or_unusable_branch_is_an_error_that_changes_nothing(answer: Exception, code: int) -> None:
    network = Network()
    with pytest.raises(CniError) as err:
        asyncio.run(_pods(Lookup(answer), network).add(_request("ADD"), KEY))
    assert err.value.code == code and network.wired == []


def test_dummy_interface_carries_the_vlan_id() -> None:
    iface = dummy_interface("shop", "web", 12)
    assert iface.name.startswith("dummy") and len(iface.name) <= 15 and iface.mac == "12"
    assert prev_result_vlan({"interfaces": [{"name": iface.name, "mac": "12"}]}) == 12
    assert prev_result_vlan({"interfaces": [{"name": "dummyx", "mac": "0"}]}) is None


def test_gc_unwires_branch_pods_the_runtime_no_longer_lists() -> None:
    network = Network()
    pods = _pods(Lookup(ENI), network)
    asyncio.run(pods.add(_request("ADD"), KEY))
    asyncio.run(pods.gc("vpcnet", {("c1", "eth0")}))
    assert network.unwired == []
    asyncio.run(pods.gc("vpcnet", set()))
    assert len(network.unwired) == 1 and pods.endpoints == {}
