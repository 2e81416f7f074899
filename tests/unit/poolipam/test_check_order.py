"""`vpcnet ipam check` must not call the address of a pod that started during the check a leak."""

from __future__ import annotations

import asyncio
import json
import time
from ipaddress import IPv4Address, IPv4Network

from vpcnet.datastore.resources import ResourceRef, ResourceStore, ref_of
from vpcnet.datastore.types import KeyValue, Listing
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolgc import check_against_pods
from vpcnet.ipam.poolobjects import (
    CONFIRMED,
    affinity_document,
    block_document,
    handle_document,
    lease_document,
)

CIDR = IPv4Network("10.244.0.0/26")
NOW = time.time()


def world(pod_started: bool) -> dict[str, bytes]:
    """The datastore before and after pod shop/web starts (the Pod is stored, then its address taken)."""
    record = NodeRecord("n1", IPv4Address("10.0.0.4"), IPv4Network("10.0.0.0/20"))
    documents = [lease_document("n1", record, 3600, NOW), affinity_document("n1", CIDR, CONFIRMED)]
    block = Block.new(CIDR, "n1")
    if pod_started:
        block.allocate("h-web", "n1", "shop", "web")
        documents.append(handle_document("h-web", {CIDR: 1}, NOW))
        documents.append(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}}
        )
    documents.append(block_document(block))
    return {ref_of(d).key: json.dumps(d).encode() for d in documents}


class PodStartsDuringTheCheck:
    """Answers the first read from the world before the pod started, every later read from the one after."""

    def __init__(self) -> None:
        self.reads = 0

    async def list(self, prefix: str) -> Listing:
        self.reads += 1
        keys = world(pod_started="/pod/" in prefix)  # the IPAM is read first, the Pods last
        items = [KeyValue(k, v, 1, self.reads, 1) for k, v in sorted(keys.items()) if k.startswith(prefix)]
        return Listing(items, self.reads)


def test_a_pod_started_between_the_reads_is_not_a_leak() -> None:
    report = asyncio.run(check_against_pods(ResourceStore(PodStartsDuringTheCheck())))  # type: ignore[arg-type]
    assert report.leaked == [] and report.clean, report.to_json()


class PodGone:
    """The pod's allocation is there, the Pod is not (deleted without its CNI DEL)."""

    async def list(self, prefix: str) -> Listing:
        keys = {k: v for k, v in world(pod_started=True).items() if "/pod/" not in k}
        return Listing([KeyValue(k, v, 1, 1, 1) for k, v in sorted(keys.items()) if k.startswith(prefix)], 1)


def test_a_pod_that_is_gone_is_a_leak() -> None:
    report = asyncio.run(check_against_pods(ResourceStore(PodGone())))  # type: ignore[arg-type]
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
    report = asyncio.run(check_against_pods(ResourceStore(PodMadeAgain(other))))  # type: ignore[arg-type]
    assert [(leak.address, leak.reason) for leak in report.leaked] == [
        ("10.244.0.0", "pod-has-another-address")
    ]
    same = {"podIP": "10.244.0.0", "podIPs": [{"ip": "10.244.0.0"}]}
    assert asyncio.run(check_against_pods(ResourceStore(PodMadeAgain(same)))).clean  # type: ignore[arg-type]
    # No address reported yet (the kubelet writes it after the CNI ADD): not judged.
    assert asyncio.run(check_against_pods(ResourceStore(PodMadeAgain({})))).clean  # type: ignore[arg-type]
