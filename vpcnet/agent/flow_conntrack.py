"""Flow records joined to conntrack entries: each allowed flow gains its connection's counters (pure).

The policy chains log only an allowed connection's first packet (conntrack accepts the rest before the
chains see them), so the packets and bytes a record counts from NFLOG are that one packet's. The kernel's
connection tracker counts every packet of the connection in each direction (with
net.netfilter.nf_conntrack_acct=1, which the agent sets in its own network namespace, the node's: see
vpcnet.dataplane.conntrack_socket.enable_accounting). At each window's end the flow log dumps the table
and `annotate` gives every allowed record whose connection is there:

  counts: {"orig": {"packets", "bytes"}, "reply": {"packets", "bytes"}, "final": false}
          the connection's totals so far, the way it was opened (src -> dst) and back; bytes are IP bytes
          (headers included), as conntrack counts them
  reply:  the reply tuple ({"src": {"ip", "port"}, "dst": {...}}): where the answer comes from (differs
          from the record's dst after DNAT, e.g. a Service's backend)

A record's connection is found by its 5-tuple: the packet the chain logged is past DNAT, so its
destination is the reply tuple's source; its source is the original tuple's (SNAT happens after the
chains). ICMP flows carry no id in the record: the echo connections of the pair with the logged type
are summed. The join remembers up to `max_open` joined connections; when one of them ends (a conntrack
destroy event) `ended` returns an end record: the flow's record again, with "event": "end", its final
counters ("final": true) and its end time. The kernel sends a destroy event when an entry is reaped, which
its collector may put off for up to a minute after the entry expired; a dump reaps the expired entries it
meets, and the flow log dumps each window while it holds joined connections.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vpcnet.dataplane.conntrack import Connection, Counter, Tuple
from vpcnet.dataplane.nflog import PROTOCOLS

PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOLS.items()}
ICMP = (1, 58)
ICMP_REPLY_TYPE = {8: 0, 128: 129}  # echo request -> echo reply (the connection's reply tuple has it)

# (protocol, source ip, source port, destination ip, destination port); ICMP: ports None, and the type
JoinKey = tuple[int, str, int | None, str, int | None]


def record_key(rec: Mapping[str, Any]) -> JoinKey | None:
    """The key of a record's connection; None for a protocol conntrack does not tell apart by it."""
    number = PROTOCOL_NUMBERS.get(str(rec.get("protocol")))
    if number is None:
        text = str(rec.get("protocol"))
        number = int(text) if text.isdigit() else None
    if number is None:
        return None
    src, dst = rec["src"], rec["dst"]
    if number in ICMP:
        icmp = rec.get("icmp") or {}
        return (number, src["ip"], icmp.get("type"), dst["ip"], None)
    return (number, src["ip"], src.get("port"), dst["ip"], dst.get("port"))


def connection_keys(conn: Connection) -> list[JoinKey]:
    """The keys a logged packet of conn may have: its original tuple's, and past DNAT the reply's source."""
    orig, reply = conn.orig, conn.reply
    if orig.protocol in ICMP:
        keys: list[JoinKey] = [(orig.protocol, orig.src, orig.icmp_type, orig.dst, None)]
        if reply is not None and reply.src != orig.dst:
            keys.append((orig.protocol, orig.src, orig.icmp_type, reply.src, None))
        return keys
    keys = [(orig.protocol, orig.src, orig.src_port, orig.dst, orig.dst_port)]
    if reply is not None and (reply.src, reply.src_port) != (orig.dst, orig.dst_port):
        keys.append((orig.protocol, orig.src, orig.src_port, reply.src, reply.src_port))
    return keys


ConnectionIndex = Mapping[JoinKey, Sequence[Connection]]


def index(connections: Iterable[Connection]) -> dict[JoinKey, list[Connection]]:
    """Counted connections by key (several under one key only for ICMP: echo ids are not in the key)."""
    out: dict[JoinKey, list[Connection]] = {}
    for conn in connections:
        if not conn.counted:
            continue
        for key in connection_keys(conn):
            out.setdefault(key, []).append(conn)
    return out


def counts(conns: Sequence[Connection], final: bool) -> dict[str, Any]:
    orig = _total(c.orig_counter for c in conns)
    reply = _total(c.reply_counter for c in conns)
    return {"orig": orig.to_dict(), "reply": reply.to_dict(), "final": final}


def _total(counters: Iterable[Counter | None]) -> Counter:
    packets = size = 0
    for counter in counters:
        if counter is not None:
            packets += counter.packets
            size += counter.bytes
    return Counter(packets, size)


def reply_doc(reply: Tuple | None) -> dict[str, object] | None:
    return reply.to_dict() if reply is not None else None


class FlowConntrack:
    """The join, with the connections it joined kept (bounded) until they end."""

    def __init__(self, max_open: int = 10000) -> None:
        self.max_open = max_open
        # (conntrack id, protocol) -> its records (two when both ends are pods of this node)
        self.open: OrderedDict[tuple[int, int], list[dict[str, Any]]] = OrderedDict()
        self.joined = 0  # records that gained counts
        self.unmatched = 0  # allowed records whose connection was not in the table (gone, or not counted)
        self.evicted = 0  # joined connections forgotten before they ended (more than max_open open)

    def annotate(self, records: Iterable[dict[str, Any]], connections: Iterable[Connection]) -> None:
        """Add counts and reply to each allowed record whose connection the dump holds."""
        self.annotate_indexed(records, index(connections))

    def annotate_indexed(self, records: Iterable[dict[str, Any]], by_key: ConnectionIndex) -> None:
        """The same over a dump already indexed (the flow log indexes it off the loop, with the dump)."""
        for rec in records:
            if rec.get("verdict") != "allow":
                continue
            key = record_key(rec)
            found = by_key.get(key) if key is not None else None
            if not found:
                self.unmatched += 1
                continue
            self.joined += 1
            rec["counts"] = counts(found, final=False)
            rec["reply"] = reply_doc(found[0].reply)
            if key is not None and key[0] not in ICMP:  # ICMP echoes are short: their record is enough
                self._remember(found[0], rec)

    def _remember(self, conn: Connection, rec: dict[str, Any]) -> None:
        ident = (conn.id, conn.orig.protocol)
        if not conn.id:
            return  # an entry without an id cannot be told apart in its destroy event
        held = self.open.setdefault(ident, [])
        if all(r.get("direction") != rec.get("direction") for r in held):
            held.append(rec)
        self.open.move_to_end(ident)
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)
            self.evicted += 1

    def ended(self, connections: Iterable[Connection], now: float | None = None) -> list[dict[str, Any]]:
        """End records for the joined connections among these destroyed ones."""
        out = []
        for conn in connections:
            held = self.open.pop((conn.id, conn.orig.protocol), None)
            if held is None or not conn.counted:
                continue
            stop = conn.stop_ns / 1e9 if conn.stop_ns else (now if now is not None else time.time())
            for rec in held:
                end = copy.deepcopy(rec)
                end["event"] = "end"
                end["counts"] = counts([conn], final=True)
                end["reply"] = reply_doc(conn.reply)
                end["end"] = round(stop, 3)
                out.append(end)
        return out

    def status(self) -> dict[str, int]:
        return {
            "conntrackJoined": self.joined,
            "conntrackUnmatched": self.unmatched,
            "conntrackOpen": len(self.open),
            "conntrackEvicted": self.evicted,
        }
