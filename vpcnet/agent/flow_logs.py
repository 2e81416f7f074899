"""The flow log component: packets the policy chains' verdict points logged (NFLOG) -> flows with identity.

The policy layout logs at its verdict points when VPCNET_FLOW_LOGS is denied (default) or all
(vpcnet.dataplane.flow_points); this component binds the NFLOG group, aggregates the packets per flow in
a window of VPCNET_FLOW_LOGS_WINDOW_SECONDS, and at each window's end resolves every flow's verdict point
and addresses against the policy calculation (which policy and rule, which pods), then writes the
records to a rotated JSON lines file, keeps the latest for GET /v1/flows (?follow=1 streams them), and
counts them per policy and verdict in Prometheus.

Bounded everywhere: the socket's buffer (the kernel drops beyond it, counted as lost), the window's flows
(overflow counted), the recent records and each follower's queue (a slow follower misses records).
Allowed flows carry the packets and bytes of the connection's first packet (the policy chains see nothing
after it: conntrack accepts the rest); with VPCNET_FLOW_LOGS_CONNTRACK=on (the default, used when allowed
flows are logged) they also carry the connection's counters from conntrack, each way, read at the
window's end, and an end record with the final counters when the connection ends (vpcnet.agent.
flow_conntrack). The agent turns conntrack accounting on in its network namespace (the node's) for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from vpcnet.agent.context import AgentContext
from vpcnet.agent.flow_conntrack import ConnectionIndex, FlowConntrack, index
from vpcnet.agent.flow_sink import RotatingJsonLines
from vpcnet.agent.flow_window import FlowCounts, FlowFilter, FlowKey, FlowWindow, record
from vpcnet.agent.http import Response
from vpcnet.dataplane.conntrack import Connection
from vpcnet.dataplane.conntrack_socket import ConntrackDumper, ConntrackEvents, enable_accounting
from vpcnet.dataplane.flow_points import Decider, decider_table, resolve
from vpcnet.dataplane.nflog import LoggedPacket
from vpcnet.dataplane.nflog_socket import NflogSocket
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import DesiredState, EndpointSpec

log = logging.getLogger(__name__)

RECENT = 2000  # records kept for GET /v1/flows
FOLLOWER_QUEUE = 4096  # records a follower may lag behind before it misses some
HEARTBEAT = 10.0  # seconds: a following client that went away is noticed by the next write
FLOWS_FILE = "flows.jsonl"


class FlowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("direction", "verdict", "reason", "policy")
        self.packets = Counter(
            "vpcnet_flow_log_packets", "Packets the verdict points logged", labels, registry=registry
        )
        self.flows = Counter("vpcnet_flow_log_flows", "Flow records written", labels, registry=registry)
        self.lost = Counter(
            "vpcnet_flow_log_lost_messages",
            "NFLOG messages the kernel dropped because the agent fell behind (ENOBUFS)",
            registry=registry,
        )
        self.overflow = Counter(
            "vpcnet_flow_log_overflow_packets",
            "Logged packets not aggregated because the window held its maximum of flows",
            registry=registry,
        )


class FlowLog:
    """Window -> records, resolved against a policy calculation; usable without the daemon (tests)."""

    def __init__(
        self,
        calc: PolicyCalculator,
        node: str,
        sink: RotatingJsonLines | None,
        metrics: FlowMetrics | None = None,
        max_flows: int = 10000,
        conntrack: FlowConntrack | None = None,
    ) -> None:
        self.calc = calc
        self.conntrack = conntrack  # None: no conntrack counters joined
        self.node = node
        self.sink = sink
        self.metrics = metrics
        self.window = FlowWindow(max_flows)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.followers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.packets = 0
        self.records = 0
        self.overflow = 0
        self._state: DesiredState | None = None
        self._table: dict[str, Decider] = {}
        self._previous: dict[str, Decider] = {}
        self._endpoints: dict[str, EndpointSpec] = {}  # address -> local endpoint

    def add(self, packets: list[LoggedPacket]) -> None:
        self.packets += len(packets)
        self.window.add(packets, time.time())

    def flush(self, connections: Sequence[Connection] | None = None) -> list[dict[str, Any]]:
        """The window's records, written out (joined to connections, a conntrack dump, when given)."""
        return self.emit(self.drain(), connections)

    def drain(self) -> dict[FlowKey, FlowCounts]:
        flows, overflow = self.window.drain()
        self.overflow += overflow
        if self.metrics is not None and overflow:
            self.metrics.overflow.inc(overflow)
        return flows

    def emit(
        self,
        flows: Mapping[FlowKey, FlowCounts],
        connections: Sequence[Connection] | None = None,
        *,
        indexed: ConnectionIndex | None = None,
    ) -> list[dict[str, Any]]:
        """The flows' records, published; allowed ones joined to a conntrack dump (connections, or the
        same indexed) when given."""
        if not flows:
            return []
        self._refresh()
        records = []
        for key, counts in flows.items():
            endpoint = self._endpoints.get(key.dst if key.prefix[1:2] == "i" else key.src)
            rec = record(key, counts, resolve(self._table, key.prefix, endpoint), self._identify, self.node)
            records.append(rec)
            if self.metrics is not None:
                labels = (rec["direction"] or "", rec["verdict"], rec["reason"], rec["policy"] or "")
                self.metrics.packets.labels(*labels).inc(counts.packets)
                self.metrics.flows.labels(*labels).inc()
        records.sort(key=lambda r: (r["start"], r["src"]["ip"], r["dst"]["ip"]))
        if self.conntrack is not None and connections is not None:
            self.conntrack.annotate(records, connections)
        elif self.conntrack is not None and indexed is not None:
            self.conntrack.annotate_indexed(records, indexed)
        self.publish(records)
        return records

    def ended(self, connections: list[Connection]) -> None:
        """Conntrack destroy events: the end records of the joined connections among them."""
        if self.conntrack is not None:
            self.publish(self.conntrack.ended(connections))

    def publish(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self.records += len(records)
        if self.sink is not None:
            self.sink.write(records)
        self.recent.extend(records)
        for queue in self.followers:
            for rec in records:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(rec)

    def _refresh(self) -> None:
        """The verdict points of the state now programmed; those of the previous state stay known (a packet
        logged just before its policy was deleted is still named)."""
        state = self.calc.desired()
        if state is self._state:
            return
        self._state = state
        current = decider_table(state)
        self._table = {**self._previous, **current}
        self._previous = current
        self._endpoints = {
            address.split("/")[0]: endpoint
            for endpoint in state.endpoints.values()
            for address in endpoint.addresses
        }

    def _identify(self, ip: str) -> Mapping[str, Any] | None:
        pods = self.calc.index.pods_with_ip(ip)
        if not pods:
            return None
        entry = pods[0]
        pod = entry.pod
        return {
            "namespace": pod.metadata.namespace or "default",
            "pod": pod.metadata.name,
            "labels": dict(pod.metadata.labels),
            "node": pod.node_name,
        }

    def status(self) -> dict[str, Any]:
        out = {
            "packets": self.packets,
            "records": self.records,
            "overflowPackets": self.overflow,
            "flowsInWindow": len(self.window.flows),
            "followers": len(self.followers),
        }
        if self.conntrack is not None:
            out.update(self.conntrack.status())
        return out


class FlowLogComponent:
    name = "flows"

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.flow_log: FlowLog | None = None
        self.socket: NflogSocket | None = None
        self.dumper: ConntrackDumper | None = None
        self.events: ConntrackEvents | None = None
        self._task: asyncio.Task[None] | None = None
        self.error = ""
        self.conntrack_error = ""

    async def start(self) -> None:
        cfg = self.ctx.config
        spec = cfg.flow_log_spec()
        self.ctx.introspection.route("/v1/flows", self._flows)
        self.ctx.introspection.route("/v1/flows/status", self._status)
        if spec is None or self.ctx.policy is None:
            return
        path = cfg.flow_log_file or Path(cfg.agent_socket).parent / FLOWS_FILE
        node = cfg.node_name or self.ctx.policy.calc.node_name
        sink = RotatingJsonLines(path, cfg.flow_log_max_bytes, cfg.flow_log_files)
        joined = FlowConntrack() if cfg.flow_log_conntrack and spec.mode == "all" else None
        self.flow_log = FlowLog(
            self.ctx.policy.calc, node, sink, FlowMetrics(self.ctx.metrics), conntrack=joined
        )
        self.socket = NflogSocket(spec.group, spec.snaplen)
        try:
            self.socket.open()
        except OSError as exc:  # the flow log is an observer: the node's networking goes on without it
            self.error = f"binding NFLOG group {spec.group}: {exc}"
            log.error("flow log off: %s", self.error)
            self.socket = None
            return
        self.socket.start_reading(self.flow_log.add)
        if joined is not None:
            self._open_conntrack(self.flow_log)
        self._task = asyncio.create_task(self._flush_loop(cfg.flow_log_window), name="flow-log")

    def _open_conntrack(self, flow_log: FlowLog) -> None:
        """Accounting on in this namespace (the node's), a dumper, and destroy events; without them the
        flow log goes on with NFLOG's counts only (conntrack_error says why)."""
        try:
            enable_accounting()
            dumper = ConntrackDumper()
            dumper.open()
            events = ConntrackEvents()
            events.open()
        except OSError as exc:
            self.conntrack_error = f"conntrack counters off: {exc}"
            log.error("flow log: %s", self.conntrack_error)
            flow_log.conntrack = None
            return
        events.start_reading(flow_log.ended)
        self.dumper, self.events = dumper, events

    async def _window(self, flow_log: FlowLog) -> None:
        flows = flow_log.drain()
        indexed = None
        # A dump also reaps the expired entries it meets, so a joined connection that ended gets its destroy
        # event (its end record) within a window, not whenever conntrack's collector comes by (up to 60 s).
        waiting = flow_log.conntrack is not None and flow_log.conntrack.open
        allowed = any(key.prefix[:1] in ("A", "N") for key in flows)  # denied packets have no entry
        if (allowed or waiting) and self.dumper is not None:
            try:  # after the drain: every drained flow's connection is in the table by now
                # parsed and indexed in a worker thread: a large table takes a while (bench/conntrack_join.py)
                dumper = self.dumper
                indexed = await asyncio.to_thread(lambda: index(dumper.dump()))
            except OSError as exc:
                self.conntrack_error = f"conntrack dump: {exc}"
                log.warning("flow log: %s", self.conntrack_error)
        flow_log.emit(flows, indexed=indexed)

    async def _flush_loop(self, window: float) -> None:
        assert self.flow_log is not None
        lost = 0
        while True:
            await asyncio.sleep(window)
            try:
                await self._window(self.flow_log)
            except Exception:
                log.exception("flow log: writing a window failed")
            if self.socket is not None and self.flow_log.metrics is not None and self.socket.lost > lost:
                self.flow_log.metrics.lost.inc(self.socket.lost - lost)
                lost = self.socket.lost

    async def _flows(self, query: str) -> Response:
        params = urllib.parse.parse_qs(query)
        try:
            selected = FlowFilter.from_query(params)
        except ValueError as exc:
            return 400, "text/plain", f"{exc}\n".encode()
        if self.flow_log is None:
            body = {"enabled": False, "mode": self.ctx.config.flow_logs, "error": self.error}
            return 200, "application/json", json.dumps(body).encode()
        if (params.get("follow") or ["0"])[-1] in ("1", "true"):
            return 200, "application/x-ndjson", self._follow(selected)
        lines = [json.dumps(r) for r in self.flow_log.recent if selected.matches(r)]
        return 200, "application/x-ndjson", "".join(line + "\n" for line in lines).encode()

    async def _status(self, query: str) -> Response:
        body: dict[str, Any] = {
            "mode": self.ctx.config.flow_logs,
            "error": self.error,
            "conntrackError": self.conntrack_error,
        }
        if self.flow_log is not None:
            body.update(self.flow_log.status())
        if self.socket is not None:
            body.update(lostMessages=self.socket.lost, malformedMessages=self.socket.malformed)
        return 200, "application/json", json.dumps(body).encode()

    async def _follow(self, selected: FlowFilter) -> AsyncIterator[bytes]:
        assert self.flow_log is not None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FOLLOWER_QUEUE)
        self.flow_log.followers.add(queue)
        try:
            for rec in list(self.flow_log.recent):
                if selected.matches(rec):
                    yield (json.dumps(rec) + "\n").encode()
            while True:
                try:
                    rec = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield b"\n"
                    continue
                if selected.matches(rec):
                    yield (json.dumps(rec) + "\n").encode()
        finally:
            self.flow_log.followers.discard(queue)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        for closing in (self.events, self.dumper):
            if closing is not None:
                closing.close()
        self.events = self.dumper = None
        if self.flow_log is not None:
            with contextlib.suppress(Exception):
                self.flow_log.flush()
            if self.flow_log.sink is not None:
                self.flow_log.sink.close()

    def ready(self) -> bool:
        return True  # an observer: its trouble (self.error) never holds the node back


def make_component(ctx: AgentContext) -> FlowLogComponent:
    return FlowLogComponent(ctx)
