"""The agent's handlers with a faked pod data plane: one request per key at a time, ADD rolls back."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address

from cnifakes import FakePodNetwork

from vpcnet.cni.handlers import CniHandler
from vpcnet.cni.shim import encode_request
from vpcnet.dataplane.podnet import PodSpec, WiredPod, WiringError
from vpcnet.ipam.types import AddressWaitTimedOut, Assignment, IpamKey
from vpcnet.testing.memalloc import MemoryAllocator

CONF = json.dumps({"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}).encode()


def request(
    command: str, container: str, netns: bytes = b"/run/netns/x", conf: bytes = CONF, pod: bytes = b"web"
) -> bytes:
    env = {
        b"CNI_COMMAND": command.encode(),
        b"CNI_CONTAINERID": container.encode(),
        b"CNI_NETNS": netns,
        b"CNI_IFNAME": b"eth0",
        b"CNI_ARGS": b"K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + pod,
    }
    return encode_request(env, conf)


class SlowPodNetwork(FakePodNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most = 0

    async def wire(self, spec: PodSpec) -> WiredPod:
        self.active += 1
        self.most = max(self.most, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return await super().wire(spec)


def test_same_key_requests_run_one_at_a_time() -> None:
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 5, 0)])
    podnet = SlowPodNetwork()
    handler = CniHandler(lambda: allocator, podnet)  # type: ignore[arg-type]

    async def go() -> list[bytes]:
        return await asyncio.gather(*(handler.handle(request("ADD", "c1")) for _ in range(4)))

    answers = asyncio.run(go())
    addresses = {json.loads(a.partition(b"\n")[2])["ips"][0]["address"] for a in answers}
    assert addresses == {"10.0.1.10/32"}
    assert podnet.most == 1
    assert handler._locks == {}


def test_failed_wiring_releases_the_address() -> None:
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 5, 0)])

    class Refusing(FakePodNetwork):
        async def wire(self, spec: PodSpec) -> WiredPod:
            raise WiringError("refused")

    handler = CniHandler(lambda: allocator, Refusing())  # type: ignore[arg-type]
    head, _, body = asyncio.run(handler.handle(request("ADD", "c1"))).partition(b"\n")
    assert head == b"1" and json.loads(body)["code"] == 102
    assert allocator.assigned == {}


def test_exhausted_pool_is_the_vpc_cni_error() -> None:
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 1, 0)])
    handler = CniHandler(lambda: allocator, FakePodNetwork())  # type: ignore[arg-type]
    assert asyncio.run(handler.handle(request("ADD", "c1"))).startswith(b"0\n")
    body = json.loads(asyncio.run(handler.handle(request("ADD", "c2"))).partition(b"\n")[2])
    assert body["code"] == 100 and body["msg"] == "add cmd: failed to assign an IP address to container"


class SlowEc2Allocator(MemoryAllocator):
    """An allocator whose pool did not grow within its wait (EC2 slow or throttled), as VpcAddressAllocator
    says it (tests/unit/ipam/test_vpc_alloc.py checks that it does)."""

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        raise AddressWaitTimedOut("no address became available within 30s (VPCNET_ASSIGN_WAIT)")


def test_an_add_that_outwaits_the_assignment_wait_is_try_again_later() -> None:
    """Not a hard limit: the runtime must retry (11, the spec's "try again later"), not give up on 100."""
    allocator = SlowEc2Allocator.from_ranges([("10.0.1.0/24", 5, 0)])
    handler = CniHandler(lambda: allocator, FakePodNetwork())  # type: ignore[arg-type]
    head, _, body = asyncio.run(handler.handle(request("ADD", "c1"))).partition(b"\n")
    error = json.loads(body)
    assert head == b"1" and error["code"] == 11, error
    assert "timed out waiting for an IP address" in error["msg"]
    assert "VPCNET_ASSIGN_WAIT" in error["details"]


class CountingAllocator(MemoryAllocator):
    assigns: int = 0

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        self.assigns += 1
        return await super().assign(key, pod_namespace, pod_name)


def test_refused_netns_takes_no_address() -> None:
    """Defect 8: an ADD whose CNI_NETNS is refused is refused before the allocator is asked (a release would
    put the address into its cooldown: five bad ADDs made the next good one wait)."""
    allocator = CountingAllocator(MemoryAllocator.from_ranges([("10.0.1.0/24", 5, 0)]).slices)
    podnet = FakePodNetwork()
    podnet.bad_netns.add("/tmp/fifo")
    handler = CniHandler(lambda: allocator, podnet)  # type: ignore[arg-type]
    for i in range(5):
        head, _, body = asyncio.run(handler.handle(request("ADD", f"c{i}", b"/tmp/fifo"))).partition(b"\n")
        assert head == b"1" and json.loads(body)["code"] == 4, body
        assert json.loads(body)["msg"] == "CNI_NETNS is not a network namespace"
    assert allocator.assigns == 0 and allocator.assigned == {}


def test_stale_del_of_an_unknown_container_leaves_a_live_pods_address() -> None:
    """Defect 6: after a restart the handler's memory is empty; a DEL for a container the allocator does
    not know, whose prevResult names a live pod's address, must not unwire that address."""
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 5, 0)])
    podnet = FakePodNetwork()
    handler = CniHandler(lambda: allocator, podnet)  # type: ignore[arg-type]
    head, _, body = asyncio.run(handler.handle(request("ADD", "live"))).partition(b"\n")
    assert head == b"0"
    live = json.loads(body)
    restarted = CniHandler(lambda: allocator, podnet)  # type: ignore[arg-type]
    stale = json.dumps({**json.loads(CONF), "prevResult": live}).encode()
    assert asyncio.run(restarted.handle(request("DEL", "gone", conf=stale, pod=b"old"))) == b"0\n"
    assert podnet.unwired == []
    assert len(allocator.assigned) == 1
    # an address nobody holds is still cleaned up from prevResult (a DEL whose ADD never finished)
    free = json.dumps({**json.loads(CONF), "prevResult": {"ips": [{"address": "10.0.1.14/32"}]}}).encode()
    assert asyncio.run(restarted.handle(request("DEL", "gone", conf=free, pod=b"old"))) == b"0\n"
    assert podnet.unwired == [IPv4Address("10.0.1.14")]


def test_status_is_not_available_while_policy_programming_fails() -> None:
    """Issue 14, defect 11: STATUS said ready while the policy could not be programmed."""
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 5, 0)])
    problem: list[str | None] = [
        "programming the policy into the kernel is failing: iptables-restore exited 1"
    ]
    handler = CniHandler(lambda: allocator, FakePodNetwork(), policy_problem=lambda: problem[0])  # type: ignore[arg-type]
    conf = CONF.replace(b"1.0.0", b"1.1.0")  # STATUS is a 1.1 command
    answer = json.loads(asyncio.run(handler.handle(request("STATUS", "c1", conf=conf))).split(b"\n", 1)[1])
    assert answer["code"] == 50 and "network policy is not ready" in answer["msg"]
    assert "iptables-restore exited 1" in answer["details"]
    problem[0] = None
    assert asyncio.run(handler.handle(request("STATUS", "c1", conf=conf))).startswith(b"0")
