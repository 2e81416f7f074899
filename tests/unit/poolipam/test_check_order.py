"""`vpcnet ipam check` must not call the address of a pod that started during the check a leak."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address, IPv4Network

from vpcnet.datastore.resources import ResourceRef
from vpcnet.datastore.types import KeyValue, Listing
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolgc import check_against_pods
from vpcnet.ipam.poolstore import HandleRecord, affinity_key, block_key, handle_key, node_key

CIDR = IPv4Network("10.244.0.0/26")


def world(pod_started: bool) -> dict[str, bytes]:
    """The datastore before and after pod shop/web starts (the Pod is stored, then its address taken)."""
    keys = {
        node_key("n1"): NodeRecord("n1", IPv4Address("10.0.0.4"), IPv4Network("10.0.0.0/20")).to_bytes(),
        affinity_key("n1", CIDR): b"{}",
    }
    block = Block.new(CIDR, "n1")
    if pod_started:
        ordinal, seq = block.allocate("h-web", "n1", "shop", "web") or (0, 0)
        record = HandleRecord("h-web", block.address(ordinal), CIDR, ordinal, seq, "n1", "shop", "web")
        keys[handle_key("h-web")] = record.to_bytes()
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}}
        keys[ResourceRef("pod", "shop", "web").key] = json.dumps(pod).encode()
    keys[block_key(CIDR)] = block.to_bytes()
    return keys


class PodStartsDuringTheCheck:
    """Answers the first read from the world before the pod started, every later read from the one after."""

    def __init__(self) -> None:
        self.reads = 0

    async def list(self, prefix: str) -> Listing:
        self.reads += 1
        keys = world(pod_started=self.reads > 1)
        items = [KeyValue(k, v, 1, self.reads, 1) for k, v in sorted(keys.items()) if k.startswith(prefix)]
        return Listing(items, self.reads)


def test_a_pod_started_between_the_reads_is_not_a_leak() -> None:
    report = asyncio.run(check_against_pods(PodStartsDuringTheCheck()))  # type: ignore[arg-type]
    assert report.leaked == [] and report.clean, report.to_json()


class PodGone:
    """The pod's allocation is there, the Pod is not (deleted without its CNI DEL)."""

    async def list(self, prefix: str) -> Listing:
        keys = {k: v for k, v in world(pod_started=True).items() if "/pod/" not in k}
        return Listing([KeyValue(k, v, 1, 1, 1) for k, v in sorted(keys.items()) if k.startswith(prefix)], 1)


def test_a_pod_that_is_gone_is_a_leak() -> None:
    report = asyncio.run(check_against_pods(PodGone()))  # type: ignore[arg-type]
    assert [(leak.pod, leak.reason) for leak in report.leaked] == [("web", "pod-gone")]


class PodMadeAgain:
    """Pod shop/web exists, with the status the kubelet wrote; the allocation read is 10.244.0.0."""

    def __init__(self, status: dict[str, object]) -> None:
        self.status = status

    async def list(self, prefix: str) -> Listing:
        keys = world(pod_started=True)
        pod_key = ResourceRef("pod", "shop", "web").key
        pod = json.loads(keys[pod_key])
        pod["status"] = self.status
        keys[pod_key] = json.dumps(pod).encode()
        return Listing([KeyValue(k, v, 1, 1, 1) for k, v in sorted(keys.items()) if k.startswith(prefix)], 1)


def test_the_address_of_an_earlier_pod_of_the_same_name_is_a_leak() -> None:
    other = {"podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}]}
    report = asyncio.run(check_against_pods(PodMadeAgain(other)))  # type: ignore[arg-type]
    assert [(leak.address, leak.reason) for leak in report.leaked] == [
        ("10.244.0.0", "pod-has-another-address")
    ]
    same = {"podIP": "10.244.0.0", "podIPs": [{"ip": "10.244.0.0"}]}
    assert asyncio.run(check_against_pods(PodMadeAgain(same))).clean  # type: ignore[arg-type]
    # No address reported yet (the kubelet writes it after the CNI ADD): not judged.
    assert asyncio.run(check_against_pods(PodMadeAgain({}))).clean  # type: ignore[arg-type]
