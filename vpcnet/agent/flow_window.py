"""Flows from logged packets (pure): aggregation in a bounded window, records with identity, filters.

A flow is the packets one verdict point logged for one 5-tuple (plus ICMP type/code) within a window.
The window holds at most `max_flows` flows: under a flood of new tuples the surplus packets are counted
(`overflow`), not stored, so memory stays bounded whatever the kernel sends. `record()` turns a flow
into the JSON object the file, the stream and `vpcnet flows` share: the ends with their pods (namespace,
name, labels, node), the verdict and what decided it in `policy explain`'s terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vpcnet.dataplane.flow_points import Decider, direction_of
from vpcnet.dataplane.nflog import PROTOCOLS, LoggedPacket


@dataclass(frozen=True)
class FlowKey:
    prefix: str  # the verdict point (vpcnet.dataplane.flow_points)
    src: str
    dst: str
    protocol: int
    src_port: int | None
    dst_port: int | None
    icmp_type: int | None
    icmp_code: int | None

    @staticmethod
    def of(packet: LoggedPacket) -> FlowKey:
        return FlowKey(
            packet.prefix,
            packet.src,
            packet.dst,
            packet.protocol,
            packet.src_port,
            packet.dst_port,
            packet.icmp_type,
            packet.icmp_code,
        )


@dataclass
class FlowCounts:
    packets: int
    bytes: int
    start: float
    end: float


class FlowWindow:
    def __init__(self, max_flows: int = 10000) -> None:
        self.max_flows = max_flows
        self.flows: dict[FlowKey, FlowCounts] = {}
        self.overflow = 0  # packets of flows the full window could not hold (since the last drain)

    def add(self, packets: Iterable[LoggedPacket], now: float) -> None:
        flows = self.flows
        for packet in packets:
            key = FlowKey.of(packet)
            counts = flows.get(key)
            if counts is not None:
                counts.packets += 1
                counts.bytes += packet.length
                counts.end = now
            elif len(flows) < self.max_flows:
                flows[key] = FlowCounts(1, packet.length, now, now)
            else:
                self.overflow += 1

    def drain(self) -> tuple[dict[FlowKey, FlowCounts], int]:
        """The window's flows and overflow count; the window starts empty again."""
        flows, overflow = self.flows, self.overflow
        self.flows, self.overflow = {}, 0
        return flows, overflow


# What is known of an address: {"namespace", "pod", "labels", "node"} of its pod; None: not a pod we know.
Identify = Callable[[str], Mapping[str, Any] | None]


def record(
    key: FlowKey, counts: FlowCounts, decider: Decider | None, identify: Identify, node: str
) -> dict[str, Any]:
    """The flow as the JSON object every output shares (decider None: the verdict point is unknown now,
    e.g. its policy was deleted meanwhile; the verdict is still read from the prefix's letter)."""
    direction = decider.direction if decider else direction_of(key.prefix)
    verdict = decider.verdict if decider else ("allow" if key.prefix[:1] in ("A", "N") else "deny")
    out: dict[str, Any] = {
        "start": round(counts.start, 3),
        "end": round(counts.end, 3),
        "node": node,
        "direction": direction,
        "verdict": verdict,
        "reason": decider.reason if decider else "unknown",
        "tier": decider.tier if decider else None,
        "policy": decider.policy if decider else None,
        "rule": decider.rule_index if decider else None,
        "protocol": PROTOCOLS.get(key.protocol, str(key.protocol)),
        "src": _end(key.src, key.src_port, identify),
        "dst": _end(key.dst, key.dst_port, identify),
        "packets": counts.packets,
        "bytes": counts.bytes,
    }
    if key.icmp_type is not None:
        out["icmp"] = {"type": key.icmp_type, "code": key.icmp_code}
    out["explain"] = explain_text(out)
    return out


def _end(ip: str, port: int | None, identify: Identify) -> dict[str, Any]:
    end: dict[str, Any] = {"ip": ip, "port": port}
    known = identify(ip)
    if known:
        end.update(known)
    return end


def pod_name(end: Mapping[str, Any]) -> str:
    """NAMESPACE/POD of a record's end, or its address when it is not a known pod."""
    if end.get("pod"):
        return f"{end.get('namespace')}/{end['pod']}"
    return str(end.get("ip"))


def explain_text(rec: Mapping[str, Any]) -> str:
    """The deciding line in the words of `vpcnet policy explain` (vpcnet.policy.evaluate.Decision)."""
    d = "egress from" if rec["direction"] == "egress" else "ingress to"
    subject = pod_name(rec["src"] if rec["direction"] == "egress" else rec["dst"])
    verb = "allowed" if rec["verdict"] == "allow" else "denied"
    head = f"{d} {subject}: {verb}"
    reason = rec["reason"]
    if reason == "rule":
        return f"{head} by tier {rec['tier']!r}, policy {rec['policy']}, rule {rec['rule']}"
    if reason == "end-of-tier":
        return f"{head} by the end of tier {rec['tier']!r} (default action Deny)"
    if reason == "no-policy":
        return f"{head}: no policy selects the pod (default allow)"
    if reason == "profile":
        return f"{head}: passed every tier, the namespace profile allows"
    if reason == "anti-spoofing":
        return f"{head}: the source address is not the pod's own (anti-spoofing)"
    return f"{head} (the deciding rule is no longer programmed)"


@dataclass(frozen=True)
class FlowFilter:
    """What `vpcnet flows` and /v1/flows select: denied only, one pod (either end), one policy."""

    denied: bool = False
    pod: str | None = None  # NAMESPACE/NAME
    policy: str | None = None  # a policy id ("knp/ns/name") or its last part ("name")

    def __post_init__(self) -> None:
        if self.pod is not None and (self.pod.count("/") != 1 or not all(self.pod.split("/"))):
            raise ValueError(f"pod {self.pod!r} must be NAMESPACE/NAME")

    def matches(self, rec: Mapping[str, Any]) -> bool:
        if self.denied and rec.get("verdict") != "deny":
            return False
        if self.pod is not None and self.pod not in (pod_name(rec["src"]), pod_name(rec["dst"])):
            return False
        if self.policy is not None:
            policy = rec.get("policy") or ""
            if self.policy != policy and not policy.endswith("/" + self.policy):
                return False
        return True

    @staticmethod
    def from_query(query: Mapping[str, list[str]]) -> FlowFilter:
        """From a URL query (?denied=1&pod=ns/name&policy=x); raises ValueError naming a bad parameter."""
        denied = (query.get("denied") or ["0"])[-1]
        if denied not in ("0", "1", "true", "false"):
            raise ValueError(f"denied={denied!r} must be 1/true or 0/false")
        pod = (query.get("pod") or [""])[-1]
        policy = (query.get("policy") or [""])[-1]
        return FlowFilter(denied in ("1", "true"), pod or None, policy or None)
