"""The policy part of the node agent: datastore watch -> calculation -> kernel (Calico felix's job).

One loop: take every datastore event that is waiting (a batch), feed the calculation, apply the new
desired state (only what changed is sent), report the datastore revision now enforced. Failures are
retried with exponential backoff against the newest state; nothing is opened while they last (new veths
stay behind the dispatch chains' drop). Every `resync_interval` seconds the applier re-reads the kernel
and repairs what someone changed by hand.

A node has one plane per address family its pods use (vpcnet.agent.policy_family chooses): each is a
calculation and a data plane of that family (ip6tables + inet6 sets, or an ip6 table), fed the same events
and applied in the same loop; the enforced revision is the one every plane has programmed.

Settings (ctx.config): policy_backend (VPCNET_POLICY_BACKEND = iptables (default) | nftables) and
policy_resync_interval (VPCNET_POLICY_RESYNC_SECONDS, default 90). The enforced revision is written to
`<node dir>/policy-status.json` ({"revision": R, "pid": P, "pid_start": T, ...}; the contract `vpcnet lab
wait` reads, believed only while process P started at T lives: vpcnet.agent.liveness) and served
on the introspection server at /v1/policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vpcnet.agent.config import Mode
from vpcnet.agent.context import AgentContext
from vpcnet.agent.heap import HeapSettler
from vpcnet.agent.http import Response
from vpcnet.agent.liveness import own_stamp
from vpcnet.dataplane.calc.feed import KINDS, Calculation, Fanout, feed_invalid, feed_stored
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.policy_backend import ApplyStats, PolicyDataplane, make_dataplane
from vpcnet.dataplane.policy_calc import LocalAddresses, PolicyCalculator
from vpcnet.dataplane.policy_state import DesiredState
from vpcnet.datastore.resources import ResourceEvent, ResourceRef, StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import EventType

log = logging.getLogger(__name__)

STATUS_FILE = "policy-status.json"  # read by vpcnet.lab.converge
IDLE_SETTLE = 0.1  # while quiet, how often the watch's progress revision is reported as enforced


class PolicyMetrics:
    """Prometheus series of the policy component (the role of felix_int_dataplane_apply_time_seconds)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.apply_seconds = Histogram(
            "vpcnet_policy_apply_seconds",
            "Time to program one change into the kernel (calculation excluded)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.apply_bytes = Counter(
            "vpcnet_policy_apply_bytes", "Bytes of restore/nft input sent to the kernel", registry=registry
        )
        self.failures = Counter(
            "vpcnet_policy_apply_failures", "Kernel programming attempts that failed", registry=registry
        )
        self.endpoints = Gauge(
            "vpcnet_policy_endpoints", "Local endpoints (pod veths) programmed", registry=registry
        )
        self.revision = Gauge(
            "vpcnet_policy_applied_revision", "Datastore revision enforced", registry=registry
        )
        self.invalid = Gauge(
            "vpcnet_policy_invalid_resources",
            "Stored resources that do not decode or validate (skipped; a policy among them fails closed)",
            registry=registry,
        )


@dataclass(frozen=True)
class PolicyPlane:
    """One address family's calculation and the data plane it programs."""

    calc: PolicyCalculator
    dataplane: PolicyDataplane


class PolicyAgent:
    """Drives one node's policy data plane from a resource store (over etcd or the Kubernetes API); usable
    without the daemon (tests, bench). calculator and dataplane are the first plane (the pods' family: flow
    logs read it); extra_planes are the others, fed and applied alike."""

    def __init__(
        self,
        store: ResourceStoreLike,
        calculator: PolicyCalculator,
        dataplane: PolicyDataplane,
        *,
        status_path: Path | None = None,
        resync_interval: float = 90.0,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: PolicyMetrics | None = None,
        extra_planes: Sequence[PolicyPlane] = (),
        heap: HeapSettler | None = None,
    ) -> None:
        self.metrics = metrics
        # what the snapshot and the watch bring in lives long: keep full collections from walking it
        self.heap = heap or HeapSettler()
        self.store = store
        self.calc = calculator
        self.dataplane = dataplane
        self.planes = (PolicyPlane(calculator, dataplane), *extra_planes)
        self._feed: Calculation = Fanout([p.calc for p in self.planes]) if extra_planes else calculator
        self.status_path = status_path
        self.resync_interval = resync_interval
        self.max_backoff = max_backoff
        self.clock = clock
        self.applied_revision = 0  # every change up to this revision is enforced
        self.seen_revision = 0
        self.applies = 0
        self.failures = 0
        self.last_error = ""
        self.apply_failing = False  # the last kernel programming failed: endpoints are held closed
        self.last_apply_seconds = 0.0
        self.synced = asyncio.Event()
        self._events: asyncio.Queue[ResourceEvent | None] = asyncio.Queue()  # None: the watch ended
        self._progress_revision = 0  # every event up to this revision has reached the queue
        self._bad: dict[ResourceRef, str] = {}
        self._known: set[ResourceRef] = set()

    # ------------------------------------------------------------------ feeding the calculation

    def handle(self, ref: ResourceRef, resource: StoredResource | None) -> None:
        """One resource put (resource given) or deleted (None). A resource that does not decode or parse
        (written around the API's validation: etcdctl, old or foreign data) is reported (log, metric,
        status' ignored_resources) and skipped; a policy among them fails closed (feed_invalid). Whatever
        one document holds, it never stops the loop."""
        if resource is None:
            self._known.discard(ref)
        else:
            self._known.add(ref)
        try:
            self._handle(ref, resource)
            self._bad.pop(ref, None)
        except Exception as exc:  # any fault of one document: ValueError from validation, or worse
            why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            done = self._fail_closed(ref)
            if self._bad.get(ref) != why:  # once per fault, not on every relist
                log.warning("policy: %s is invalid (%s); %s", ref, why, done)
            self._bad[ref] = why
        if self.metrics is not None:
            self.metrics.invalid.set(len(self._bad))

    def _fail_closed(self, ref: ResourceRef) -> str:
        """Put the invalid ref's fail-closed stand-in in place; says what was done, for the log."""
        if feed_invalid(self._feed, ref):
            scope = f"every pod of namespace {ref.namespace}" if ref.namespace else "every pod"
            return f"denying {scope} in both directions until it is fixed or deleted"
        return "skipped (the last valid version, if any, stays in force)"

    def _handle(self, ref: ResourceRef, stored: StoredResource | None) -> None:
        feed_stored(self._feed, ref, stored)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        revision = await self._load_snapshot()
        watcher = asyncio.create_task(self._watch(revision + 1))
        try:
            await self._apply_with_retry(revision)
            self.synced.set()
            self.heap.after_apply(snapshot=True)
            next_resync = self.clock() + self.resync_interval
            while True:
                timeout = max(0.0, next_resync - self.clock())
                batch = await self._next_batch(timeout)
                if batch is not None and None in batch:
                    # The watch broke (store away, history compacted): start over from a snapshot.
                    revision = await self._load_snapshot()
                    watcher = asyncio.create_task(self._watch(revision + 1))
                    await self._apply_with_retry(revision)
                    self.heap.after_apply(snapshot=True)
                    continue
                for event in batch or ():
                    assert event is not None
                    self.handle(event.ref, event.resource if event.type is EventType.PUT else None)
                    self.seen_revision = max(self.seen_revision, event.revision)
                if self.clock() >= next_resync:  # even under a steady stream of changes
                    for plane in self.planes:
                        plane.dataplane.resync()
                    next_resync = self.clock() + self.resync_interval
                elif batch is None:
                    continue
                await self._apply_with_retry(self.seen_revision if batch else self.applied_revision)
                self.heap.after_apply(events=len(batch or ()))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _load_snapshot(self) -> int:
        """Everything from the store at one revision (retried with backoff while the store is away);
        what we knew and the snapshot no longer has is deleted."""
        backoff = 0.1
        while True:
            try:
                items, revision = await self.store.snapshot(KINDS)
                break
            except Exception as exc:
                self.last_error = f"datastore: {exc}"
                log.error("policy: reading the datastore failed (retrying in %.1fs): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        present = {item.ref for item in items}
        for ref in [r for r in self._known if r not in present]:
            self.handle(ref, None)
        for item in items:
            self.handle(item.ref, item)
        self.seen_revision = max(self.seen_revision, revision)
        return revision

    def _on_progress(self, revision: int) -> None:
        # Called by the watch once every event up to revision is in our queue.
        self._progress_revision = max(self._progress_revision, revision)

    async def _watch(self, start: int) -> None:
        try:
            async for event in self.store.watch(KINDS, start, self._on_progress):
                self._events.put_nowait(event)
        except Exception as exc:
            log.warning("policy: the datastore watch ended (%s); reloading a snapshot", exc)
        self._events.put_nowait(None)  # tells the loop to reload

    async def _next_batch(self, timeout: float) -> list[ResourceEvent | None] | None:
        """Everything queued (waiting up to timeout for the first). While quiet, every IDLE_SETTLE seconds
        the reported revision moves up to the watch's progress (changes to other keys need no work)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait = max(0.0, min(deadline - time.monotonic(), IDLE_SETTLE))
                first = await asyncio.wait_for(self._events.get(), timeout=wait)
                break
            except TimeoutError:
                self._report_quiet()
                if time.monotonic() >= deadline:
                    return None
        batch = [first]
        while not self._events.empty():
            batch.append(self._events.get_nowait())
        return batch

    def _report_quiet(self) -> None:
        """With everything queued applied, the watch's progress revision is enforced too: etcd reported
        that every change up to it has been sent, so nothing of ours up to it is missing. (A guess from
        the store's current revision after a pause would report changes still on their way.)"""
        if self.applied_revision < self.seen_revision or not self._events.empty():
            return
        progress = self._progress_revision
        if progress > self.applied_revision:
            self.seen_revision = max(self.seen_revision, progress)
            self.applied_revision = self.seen_revision
            self._write_status()

    async def _apply_with_retry(self, revision: int) -> None:
        backoff = 0.05
        while True:
            started = time.perf_counter()
            try:
                stats = await self._apply_planes()
            except Exception as exc:
                self.failures += 1
                self.apply_failing = True
                if self.metrics is not None:
                    self.metrics.failures.inc()
                self.last_error = str(exc)
                log.error("policy: programming the kernel failed (retrying in %.2fs): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                # Fold in whatever arrived meanwhile, so the retry applies the newest state.
                while not self._events.empty():
                    event = self._events.get_nowait()
                    if event is None:  # the watch ended: the main loop reloads; keep the marker for it
                        self._events.put_nowait(None)
                        break
                    self.handle(event.ref, event.resource if event.type is EventType.PUT else None)
                    self.seen_revision = max(self.seen_revision, event.revision)
                    revision = self.seen_revision
                continue
            self.last_apply_seconds = time.perf_counter() - started
            self.applies += 1
            if self.metrics is not None:
                self.metrics.apply_seconds.observe(self.last_apply_seconds)
                self.metrics.apply_bytes.inc(stats.total)
                self.metrics.endpoints.set(len(self.calc.local_endpoints))
                self.metrics.revision.set(max(self.applied_revision, revision))
            self.last_error = ""
            self.apply_failing = False
            self.applied_revision = max(self.applied_revision, revision)
            self._write_status()
            return

    async def _apply_planes(self) -> ApplyStats:
        set_bytes = rule_bytes = 0
        for plane in self.planes:  # a failure leaves the planes after it for the retry
            stats = await plane.dataplane.apply(plane.calc.desired())
            set_bytes += stats.set_bytes
            rule_bytes += stats.rule_bytes
        return ApplyStats(set_bytes, rule_bytes)

    def programming_problem(self) -> str | None:
        """Why this node cannot be called ready for pods (health, CNI STATUS), or None: the first apply has
        not succeeded, or the last one failed (changes are not enforced; new endpoints stay dropped)."""
        if self.apply_failing:
            return f"programming the policy into the kernel is failing: {self.last_error}"
        if not self.synced.is_set():
            return "the policy has not been programmed yet"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "revision": self.applied_revision,
            "backend": self.dataplane.name,
            "endpoints": len(self.calc.local_endpoints),
            "applies": self.applies,
            "failures": self.failures,
            "last_error": self.last_error,
            "apply_failing": self.apply_failing,
            "last_apply_seconds": round(self.last_apply_seconds, 6),
            "ignored_resources": {str(ref): why for ref, why in self._bad.items()},
            "planes": [
                {"family": f"IPv{p.calc.family.value}", "endpoints": len(p.calc.local_endpoints)}
                for p in self.planes
            ],
        }

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_name(f".{self.status_path.name}.tmp")
        tmp.write_text(json.dumps({**self.status(), **own_stamp()}))
        tmp.replace(self.status_path)


async def close_bare_node(dataplane: PolicyDataplane, prefixes: tuple[str, ...]) -> bool:
    """Fail closed from the first moment: on a node without rules of ours (a first start), program the
    dispatch for no endpoints, so that every pod veth is dropped until the agent has programmed it, even
    while the datastore is away. Where our rules exist (an agent restart) they stay as they are: the pods
    they cover keep working and new veths already meet the dispatch drop. True when it programmed."""
    if await dataplane.installed():
        return False
    family = dataplane.family
    await dataplane.apply(DesiredState(prefixes, {}, {}, {}, family=family))
    log.info(
        "policy: no IPv%d rules of ours yet: dispatch installed, unknown %s veths dropped",
        family.value,
        "/".join(prefixes),
    )
    return True


@dataclass(frozen=True)
class Plane:
    """What one plane of a node is: its family, and where its local endpoints' addresses come from (None:
    the pods' IPs of that family)."""

    family: IpFamily
    local_addresses: LocalAddresses | None = None


class PolicyComponent:
    name = "policy"

    def __init__(self, ctx: AgentContext, planes: Sequence[Plane] = (Plane(IpFamily.V4),)) -> None:
        if not planes or len({p.family for p in planes}) != len(planes):
            raise ValueError(f"policy planes {planes!r}: one or more, at most one per family")
        self.ctx = ctx
        self.planes = tuple(planes)
        self.agent: PolicyAgent | None = None
        self._task: asyncio.Task[None] | None = None
        self._datastore: Any = None

    async def start(self) -> None:
        from vpcnet.datastore.open import open_store

        cfg = self.ctx.config
        backend = cfg.policy_backend
        node = cfg.node_name or socket.gethostname()
        prefixes = ("cali",) if cfg.mode is Mode.CALICO else (cfg.veth_prefix,)
        self._datastore = await open_store(cfg.datastore_settings())
        runner = SubprocessRunner()
        planes = []
        for plane in self.planes:
            dataplane = make_dataplane(backend, runner, plane.family)
            # The other back end's leftovers (a switch of setting) would keep enforcing stale rules.
            other = make_dataplane(
                "nftables" if backend == "iptables" else "iptables", runner, plane.family, in_process=False
            )
            try:
                await other.remove_all()
            except Exception as err:  # best effort: its tool may be missing (then it has no rules either)
                log.warning("could not remove the %s back end's rules (ignored): %s", other.name, err)
            # Before the CNI component starts wiring pods (it starts after this one).
            await close_bare_node(dataplane, prefixes)
            calc = PolicyCalculator(
                node, prefixes, cfg.flow_log_spec(), plane.family, local_addresses=plane.local_addresses
            )
            planes.append(PolicyPlane(calc, dataplane))
        self.agent = PolicyAgent(
            self._datastore.store,
            planes[0].calc,
            planes[0].dataplane,
            status_path=cfg.agent_socket.parent / STATUS_FILE,
            resync_interval=cfg.policy_resync_interval,
            metrics=PolicyMetrics(self.ctx.metrics),
            extra_planes=planes[1:],
        )
        self.ctx.policy = self.agent  # the flow log reads the calculation (pods, verdict points)
        self.ctx.introspection.route("/v1/policy", self._introspect)
        self._task = asyncio.create_task(self.agent.run(), name="policy")

    async def _introspect(self, query: str) -> Response:
        body = self.agent.status() if self.agent else {"started": False}
        return 200, "application/json", json.dumps(body, indent=2).encode()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await self._task
                except Exception as err:  # stop() must not raise; the loop's failure is only reported
                    log.warning("policy loop ended with an error while stopping: %s", err)
            self._task = None
        if self._datastore is not None:
            try:
                await self._datastore.close()
            except Exception as err:  # stop() must not raise; the connection is dropped with the process
                log.debug("ignored while closing the datastore: %s", err)
            self._datastore = None

    def ready(self) -> bool:
        return self.agent is not None and self.agent.programming_problem() is None


def make_component(ctx: AgentContext) -> PolicyComponent:
    return PolicyComponent(ctx)
