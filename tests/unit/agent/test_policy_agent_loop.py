"""The policy agent's loop with an in-memory store and a scripted data plane: retries with backoff, the
newest state applied after a failure, the enforced revision reported only once applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vpcnet.agent.heap import HeapSettler
from vpcnet.agent.policy import PolicyAgent, PolicyMetrics
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.kernel_cmd import DataplaneError
from vpcnet.dataplane.policy_backend import ApplyStats, BackendName
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import DesiredState
from vpcnet.datastore.resources import ResourceEvent, ResourceRef, StoredResource
from vpcnet.datastore.types import DatastoreUnavailable, EventType


def pod_body(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


class MemoryStore:
    def __init__(self) -> None:
        self.events: asyncio.Queue[ResourceEvent | None] = asyncio.Queue()  # None: the watch breaks
        self.revision = 10
        self.progress = 10
        self.datastore = self
        self.pods = {"a": "10.0.0.1"}
        self.snapshots = 0

    async def current_revision(self) -> int:
        return self.revision

    async def snapshot(self, kinds: Collection[str]) -> tuple[list[StoredResource], int]:
        self.snapshots += 1
        items = [
            StoredResource(ResourceRef("pod", "default", name), pod_body(name, ip), 5)
            for name, ip in self.pods.items()
        ]
        return items, self.revision

    async def watch(
        self, kinds: Collection[str], start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[ResourceEvent]:
        """Like etcd's: when it has sent everything queued, it reports progress up to `self.progress`
        (the revision of the last event, or what a test moves it to: changes to keys not watched)."""
        while True:
            try:
                event = await asyncio.wait_for(self.events.get(), 0.02)
            except TimeoutError:
                if progress is not None:
                    progress(self.progress)
                continue
            if event is None:
                raise DatastoreUnavailable("etcd went away")
            self.progress = max(self.progress, event.revision)
            yield event

    def put_pod(self, name: str, ip: str) -> None:
        self.revision += 1
        ref = ResourceRef("pod", "default", name)
        stored = StoredResource(ref, pod_body(name, ip), self.revision)
        self.events.put_nowait(ResourceEvent(EventType.PUT, ref, stored, self.revision))


class ScriptedDataplane:
    name: BackendName = "iptables"
    family = IpFamily.V4

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.applied: list[DesiredState] = []
        self.attempts = 0

    async def apply(self, state: DesiredState) -> ApplyStats:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise DataplaneError("iptables-restore exited 1: injected")
        self.applied.append(state)
        return ApplyStats(0, 1)

    def resync(self) -> None:
        pass

    async def remove_all(self) -> None:
        pass


def test_failures_are_retried_and_the_newest_state_wins(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore()
        dataplane = ScriptedDataplane(failures=3)
        status = tmp_path / "policy-status.json"
        registry = CollectorRegistry()
        agent = PolicyAgent(
            store,
            PolicyCalculator("n1", ["eni"]),
            dataplane,  # type: ignore[arg-type]
            status_path=status,
            metrics=PolicyMetrics(registry),
        )
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.01)
        store.put_pod("b", "10.0.0.2")  # arrives while the first apply keeps failing
        for _ in range(200):
            if agent.synced.is_set():
                break
            await asyncio.sleep(0.02)
        assert agent.synced.is_set() and dataplane.attempts == 4 and agent.failures == 3
        # The successful retry already carries pod b: the newest state, not the one that failed.
        assert len(dataplane.applied[0].endpoints) == 2
        for _ in range(100):
            if agent.applied_revision >= store.revision:
                break
            await asyncio.sleep(0.02)
        reported = json.loads(status.read_text())
        assert reported["revision"] == store.revision and reported["last_error"] == ""
        assert registry.get_sample_value("vpcnet_policy_apply_failures_total") == 3
        assert registry.get_sample_value("vpcnet_policy_endpoints") == 2
        assert (registry.get_sample_value("vpcnet_policy_apply_seconds_count") or 0) >= 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_revision_is_not_reported_while_failing(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore()
        dataplane = ScriptedDataplane(failures=10**6)
        status = tmp_path / "policy-status.json"
        agent = PolicyAgent(
            store, PolicyCalculator("n1", ["eni"]), dataplane, status_path=status, max_backoff=0.05
        )  # type: ignore[arg-type]
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.5)
        assert dataplane.attempts >= 3 and not status.exists() and agent.applied_revision == 0
        assert "injected" in agent.status()["last_error"]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_periodic_resync_rereads_the_kernel(tmp_path: Path) -> None:
    class Counting(ScriptedDataplane):
        resyncs = 0

        def resync(self) -> None:
            self.resyncs += 1

    async def main() -> None:
        store = MemoryStore()
        dataplane = Counting(failures=0)
        calc = PolicyCalculator("n1", ["eni"])
        agent = PolicyAgent(store, calc, dataplane, resync_interval=0.1)  # type: ignore[arg-type]
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.6)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert dataplane.resyncs >= 2
        assert dataplane.attempts >= 1 + dataplane.resyncs  # every resync is followed by an apply

    asyncio.run(main())


def test_a_broken_watch_reloads_a_snapshot_and_drops_what_is_gone(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore()
        dataplane = ScriptedDataplane(failures=0)
        agent = PolicyAgent(store, PolicyCalculator("n1", ["eni"]), dataplane)  # type: ignore[arg-type]
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.05)
        assert len(dataplane.applied[-1].endpoints) == 1
        store.pods = {"b": "10.0.0.2", "c": "10.0.0.3"}  # a was deleted while the watch was down
        store.revision = 20
        store.events.put_nowait(None)
        for _ in range(100):
            if agent.applied_revision >= 20:
                break
            await asyncio.sleep(0.02)
        assert store.snapshots == 2
        addresses = sorted(e.addresses[0] for e in dataplane.applied[-1].endpoints.values())
        assert addresses == ["10.0.0.2/32", "10.0.0.3/32"]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def until(what: str, done: Callable[[], bool]) -> None:
    for _ in range(500):  # 10 s: a loaded machine
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_loop_settles_the_heap_after_each_snapshot_and_every_few_events(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore()
        settles: list[int] = []
        heap = HeapSettler(every=3, settle=lambda: settles.append(1))
        dataplane = ScriptedDataplane(failures=0)
        agent = PolicyAgent(store, PolicyCalculator("n1", ["eni"]), dataplane, heap=heap)  # type: ignore[arg-type]
        task = asyncio.create_task(agent.run())
        await until("the first apply", agent.synced.is_set)
        assert len(settles) == 1  # the snapshot
        for i in range(3):
            store.put_pod(f"p{i}", f"10.0.1.{i + 1}")
            await until(f"pod p{i} applied", lambda: agent.applied_revision >= store.revision)
        assert len(settles) == 2  # three events taken in
        store.events.put_nowait(None)  # the watch breaks: a new snapshot
        await until("the reload", lambda: store.snapshots == 2 and len(settles) == 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_policy_starts_before_the_cni_wires_pods() -> None:
    from vpcnet.agent.components import COMPONENTS

    order = [entry.name for entry in COMPONENTS]
    assert order.index("policy") < order.index("cni")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_resync_setting_names_the_variable(value: str) -> None:
    from vpcnet.agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"VPCNET_POLICY_RESYNC_SECONDS='{value}'"):
        load_config({"VPCNET_POLICY_BACKEND": "iptables", "VPCNET_POLICY_RESYNC_SECONDS": value})


def test_a_bad_policy_backend_names_the_variable() -> None:
    from vpcnet.agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="VPCNET_POLICY_BACKEND='ebpf': expected one of iptables, nftables"):
        load_config({"VPCNET_POLICY_BACKEND": "ebpf"})
    assert load_config({"VPCNET_POLICY_BACKEND": "nftables"}).policy_backend == "nftables"


def test_the_reported_revision_waits_for_the_watch_not_the_clock(tmp_path: Path) -> None:
    """A change committed (the store's revision moved) whose event is still on its way is not reported
    as enforced, however long it takes; a change to keys not watched is, once the watch's progress
    says so."""

    async def main() -> None:
        store = MemoryStore()
        status = tmp_path / "policy-status.json"
        agent = PolicyAgent(store, PolicyCalculator("n1", ["eni"]), ScriptedDataplane(0), status_path=status)  # type: ignore[arg-type]
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.1)
        assert agent.applied_revision == 10
        store.revision = 11  # committed; the watch has not sent its event yet
        await asyncio.sleep(0.5)
        assert agent.applied_revision == 10, "reported a change it has not seen"
        store.revision -= 1
        store.put_pod("b", "10.0.0.2")  # now the event arrives
        for _ in range(100):
            if agent.applied_revision >= 11:
                break
            await asyncio.sleep(0.02)
        assert agent.applied_revision == 11 and len(agent.calc.local_endpoints) == 2
        store.revision = store.progress = 15  # other keys changed; the watch says it is at 15
        for _ in range(100):
            if agent.applied_revision >= 15:
                break
            await asyncio.sleep(0.02)
        assert agent.applied_revision == 15 and json.loads(status.read_text())["revision"] == 15
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_not_ready_while_the_last_apply_failed(tmp_path: Path) -> None:
    """Issue 14, defect 11: health said ready while a later programming kept failing."""

    async def main() -> None:
        store = MemoryStore()
        dataplane = ScriptedDataplane(failures=0)
        agent = PolicyAgent(store, PolicyCalculator("n1", ["eni"]), dataplane, max_backoff=0.05)  # type: ignore[arg-type]
        assert agent.programming_problem() == "the policy has not been programmed yet"
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.synced.wait(), 10)
        assert agent.programming_problem() is None
        dataplane.failures = 10**6
        store.put_pod("b", "10.0.0.2")
        for _ in range(200):
            if agent.programming_problem() is not None:
                break
            await asyncio.sleep(0.02)
        problem = agent.programming_problem()
        assert problem is not None and "injected" in problem and agent.status()["apply_failing"]
        dataplane.failures = 0
        for _ in range(200):
            if agent.programming_problem() is None:
                break
            await asyncio.sleep(0.02)
        assert agent.programming_problem() is None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
