"""A stored policy that does not decode or validate fails closed, on a running agent and on a restarted
one alike, and never stops the loop (issue 14, defects 2 and 3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from prometheus_client import CollectorRegistry

from vpcnet.agent.policy import PolicyAgent, PolicyMetrics
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_backend import ApplyStats, BackendName
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import DesiredState, TierPolicies
from vpcnet.datastore.resources import ResourceEvent, ResourceRef, StoredResource
from vpcnet.policy.failclosed import FAIL_CLOSED_TIER_SPEC

KNP = "networkpolicy.networking.k8s.io"
GNP = "globalnetworkpolicy.projectcalico.org"


def pod(name: str, namespace: str, ip: str) -> StoredResource:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }
    return StoredResource(ResourceRef("pod", namespace, name), body, 5)


def allow_all(namespace: str, name: str, selector: Any) -> StoredResource:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": selector, "ingress": [{}]},
    }
    return StoredResource(ResourceRef(KNP, namespace, name), body, 6)


def undecodable(ref: ResourceRef) -> StoredResource:
    return StoredResource(ref, {"metadata": {"name": ref.name}}, 7, invalid="the stored value is not JSON")


class SnapshotStore:
    """A store whose snapshot is `items` and whose watch stays quiet."""

    def __init__(self, items: list[StoredResource]) -> None:
        self.items = items

    async def snapshot(self, kinds: Collection[str]) -> tuple[list[StoredResource], int]:
        return list(self.items), 10

    async def watch(
        self, kinds: Collection[str], start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[ResourceEvent]:
        while True:
            await asyncio.sleep(0.02)
            if progress is not None:
                progress(10)
            if False:  # pragma: no cover - makes this an async generator
                yield


class Recording:
    name: BackendName = "iptables"
    family = IpFamily.V4

    def __init__(self) -> None:
        self.applied: list[DesiredState] = []

    async def apply(self, state: DesiredState) -> ApplyStats:
        self.applied.append(state)
        return ApplyStats(0, 1)

    def resync(self) -> None:
        pass


def tiers(state: DesiredState, pod_ip: str, direction: str) -> tuple[TierPolicies, ...]:
    for endpoint in state.endpoints.values():
        if endpoint.addresses == (f"{pod_ip}/32",):
            return endpoint.ingress if direction == "ingress" else endpoint.egress
    raise AssertionError(f"no endpoint {pod_ip}")


def first_tier(state: DesiredState, pod_ip: str, direction: str) -> str | None:
    found = tiers(state, pod_ip, direction)
    return found[0].tier if found else None


def started(items: list[StoredResource], registry: CollectorRegistry | None = None) -> tuple[Any, ...]:
    async def main() -> tuple[PolicyAgent, Recording]:
        dataplane = Recording()
        metrics = PolicyMetrics(registry) if registry is not None else None
        agent = PolicyAgent(
            SnapshotStore(items),  # type: ignore[arg-type]
            PolicyCalculator("n1", ["eni"]),
            dataplane,  # type: ignore[arg-type]
            metrics=metrics,
        )
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.synced.wait(), 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return agent, dataplane

    return asyncio.run(main())


def test_an_undecodable_policy_in_the_snapshot_denies_its_namespace_and_the_rest_syncs() -> None:
    registry = CollectorRegistry()
    bad = ResourceRef(KNP, "ns1", "bad")
    agent, dataplane = started(
        [pod("a", "ns1", "10.0.0.1"), pod("b", "ns2", "10.0.0.2"), undecodable(bad)], registry
    )
    state = dataplane.applied[-1]
    for direction in ("ingress", "egress"):
        assert first_tier(state, "10.0.0.1", direction) == FAIL_CLOSED_TIER_SPEC.name
        assert first_tier(state, "10.0.0.2", direction) is None  # another namespace: untouched
    assert agent.status()["ignored_resources"] == {str(bad): f"{bad}: the stored value is not JSON"}
    assert agent.applied_revision == 10
    assert registry.get_sample_value("vpcnet_policy_invalid_resources") == 1


def test_a_policy_that_fails_validation_fails_closed_after_a_restart_as_before_it() -> None:
    """Defect 3: the running agent had the good version, the restarted one never saw it; both deny."""
    good = allow_all("ns1", "web", {"matchLabels": {"app": "a"}})
    broken = allow_all("ns1", "web", {"matchExpressions": [{"key": "app", "operator": "Bogus"}]})
    pods = [pod("a", "ns1", "10.0.0.1"), pod("c", "ns1", "10.0.0.3")]
    restarted, dataplane = started([*pods, broken])
    state = dataplane.applied[-1]
    for ip in ("10.0.0.1", "10.0.0.3"):  # the whole namespace, not just what the old selector chose
        assert first_tier(state, ip, "ingress") == FAIL_CLOSED_TIER_SPEC.name
        assert first_tier(state, ip, "egress") == FAIL_CLOSED_TIER_SPEC.name
    assert str(good.ref) in restarted.status()["ignored_resources"]

    running, _ = started([*pods, good])
    running.handle(broken.ref, broken)
    assert running.calc.desired().endpoints == state.endpoints  # the same, whatever came before
    running.handle(good.ref, good)  # fixed: the policy itself again, the deny gone
    assert first_tier(running.calc.desired(), "10.0.0.1", "ingress") == "default"
    assert first_tier(running.calc.desired(), "10.0.0.3", "ingress") is None
    assert running.status()["ignored_resources"] == {}
    running.handle(broken.ref, undecodable(broken.ref))
    running.handle(broken.ref, None)  # deleted: nothing left of it
    assert first_tier(running.calc.desired(), "10.0.0.1", "ingress") is None


def test_an_invalid_global_policy_denies_every_pod_and_a_json_array_pod_is_skipped() -> None:
    bad_gnp = ResourceRef(GNP, None, "g")
    array_pod = StoredResource(ResourceRef("pod", "ns3", "p"), {"metadata": {}}, 8, invalid="a JSON list")
    agent, dataplane = started(
        [pod("a", "ns1", "10.0.0.1"), pod("b", "ns2", "10.0.0.2"), undecodable(bad_gnp), array_pod]
    )
    state = dataplane.applied[-1]
    assert len(state.endpoints) == 2
    for ip in ("10.0.0.1", "10.0.0.2"):
        assert first_tier(state, ip, "ingress") == first_tier(state, ip, "egress") == "_fail-closed"
    assert set(agent.status()["ignored_resources"]) == {str(bad_gnp), str(array_pod.ref)}
