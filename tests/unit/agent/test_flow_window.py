"""Flow aggregation, records and filters (pure), and the rotated JSON lines file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpcnet.agent.flow_sink import RotatingJsonLines
from vpcnet.agent.flow_window import FlowCounts, FlowFilter, FlowKey, FlowWindow, record
from vpcnet.dataplane.flow_points import Decider
from vpcnet.dataplane.nflog import LoggedPacket

PODS = {
    "10.0.0.2": {"namespace": "shop", "pod": "web", "labels": {"app": "web"}, "node": "n1"},
    "10.0.0.3": {"namespace": "shop", "pod": "db", "labels": {"app": "db"}, "node": "n1"},
}


def pkt(sport: int, prefix: str = "Di0 vpcn-pi-x", length: int = 60) -> LoggedPacket:
    return LoggedPacket(prefix, "10.0.0.2", "10.0.0.3", 6, sport, 5432, None, None, length)


def test_packets_of_one_flow_add_up_and_the_window_starts_over() -> None:
    window = FlowWindow()
    window.add([pkt(1000), pkt(1000, length=40)], now=10.0)
    window.add([pkt(1000), pkt(1001)], now=12.5)
    flows, overflow = window.drain()
    counts = flows[FlowKey.of(pkt(1000))]
    assert (counts.packets, counts.bytes, counts.start, counts.end) == (3, 160, 10.0, 12.5)
    assert len(flows) == 2 and overflow == 0
    assert window.drain() == ({}, 0)


def test_a_flood_of_new_tuples_is_bounded() -> None:
    window = FlowWindow(max_flows=100)
    window.add((pkt(port) for port in range(10000)), now=1.0)
    window.add([pkt(5)], now=2.0)  # a flow already held still counts
    flows, overflow = window.drain()
    assert len(flows) == 100 and overflow == 9900
    assert flows[FlowKey.of(pkt(5))].packets == 2


def test_a_record_names_the_pods_and_what_decided_like_explain() -> None:
    decider = Decider("deny", "rule", "ingress", "default", "knp/shop/deny-db", 3)
    rec = record(FlowKey.of(pkt(1000)), FlowCounts(2, 120, 1.0, 2.0), decider, PODS.get, "n1")
    assert rec["src"]["pod"] == "web" and rec["dst"]["labels"] == {"app": "db"} and rec["dst"]["port"] == 5432
    assert (rec["verdict"], rec["policy"], rec["rule"], rec["packets"], rec["bytes"]) == (
        "deny",
        "knp/shop/deny-db",
        3,
        2,
        120,
    )
    assert rec["explain"] == "ingress to shop/db: denied by tier 'default', policy knp/shop/deny-db, rule 3"
    unknown = record(FlowKey.of(pkt(1, "De2 gone")), FlowCounts(1, 60, 1.0, 1.0), None, PODS.get, "n1")
    assert (unknown["verdict"], unknown["direction"], unknown["reason"]) == ("deny", "egress", "unknown")
    json.dumps(rec)


def test_filters() -> None:
    decider = Decider("deny", "rule", "ingress", "default", "knp/shop/deny-db", 3)
    denied = record(FlowKey.of(pkt(1)), FlowCounts(1, 60, 1.0, 1.0), decider, PODS.get, "n1")
    allowed = dict(denied, verdict="allow", policy=None)
    assert FlowFilter(denied=True).matches(denied) and not FlowFilter(denied=True).matches(allowed)
    assert FlowFilter(pod="shop/web").matches(denied) and not FlowFilter(pod="shop/other").matches(denied)
    assert FlowFilter(policy="deny-db").matches(denied) and FlowFilter(policy="knp/shop/deny-db").matches(
        denied
    )
    assert not FlowFilter(policy="db").matches(denied)
    assert FlowFilter.from_query({"denied": ["1"], "pod": ["shop/web"]}) == FlowFilter(True, "shop/web")
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        FlowFilter(pod="web")
    with pytest.raises(ValueError, match="denied"):
        FlowFilter.from_query({"denied": ["maybe"]})


def test_the_file_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    sink = RotatingJsonLines(path, max_bytes=200, files=2)
    for i in range(30):
        sink.write([{"i": i, "pad": "x" * 40}])
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["flows.jsonl", "flows.jsonl.1", "flows.jsonl.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    last = [json.loads(line)["i"] for line in path.read_text().splitlines()]
    assert last[-1] == 29
    older = [json.loads(line)["i"] for line in (tmp_path / "flows.jsonl.1").read_text().splitlines()]
    assert older[-1] == last[0] - 1
