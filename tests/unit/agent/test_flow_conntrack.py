"""Flow records joined to conntrack entries (pure): by 5-tuple, past DNAT, ICMP summed, end records."""

from __future__ import annotations

from typing import Any

from vpcnet.agent.flow_conntrack import FlowConntrack, record_key
from vpcnet.dataplane.conntrack import Connection, Counter, Tuple


def rec(src: str, sport: int | None, dst: str, dport: int | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verdict": "allow",
        "direction": "ingress",
        "protocol": "tcp",
        "start": 10.0,
        "end": 10.0,
        "src": {"ip": src, "port": sport},
        "dst": {"ip": dst, "port": dport},
    }
    out.update(extra)
    return out


def conn(
    orig: Tuple, reply: Tuple | None, o: int = 1000, r: int = 200, ident: int = 5, counted: bool = True
) -> Connection:
    return Connection(
        orig, reply, Counter(3, o) if counted else None, Counter(2, r) if counted else None, id=ident
    )


TCP = Tuple("10.0.0.2", "10.0.0.3", 6, 40000, 80)
TCP_REPLY = Tuple("10.0.0.3", "10.0.0.2", 6, 80, 40000)


def test_a_record_gains_its_connections_counts_and_reply() -> None:
    records = [rec("10.0.0.2", 40000, "10.0.0.3", 80), rec("10.0.0.2", 40001, "10.0.0.3", 80)]
    join = FlowConntrack()
    join.annotate(records, [conn(TCP, TCP_REPLY)])
    assert records[0]["counts"] == {
        "orig": {"packets": 3, "bytes": 1000},
        "reply": {"packets": 2, "bytes": 200},
        "final": False,
    }
    assert records[0]["reply"] == {
        "src": {"ip": "10.0.0.3", "port": 80},
        "dst": {"ip": "10.0.0.2", "port": 40000},
    }
    assert "counts" not in records[1]  # no such connection
    assert join.status()["conntrackJoined"] == 1 and join.status()["conntrackUnmatched"] == 1


def test_past_dnat_the_logged_destination_is_the_reply_source() -> None:
    service = Tuple("10.0.0.2", "172.20.0.10", 6, 40000, 80)
    backend = Tuple("10.0.0.3", "10.0.0.2", 6, 8080, 40000)
    record = rec("10.0.0.2", 40000, "10.0.0.3", 8080)
    FlowConntrack().annotate([record], [conn(service, backend)])
    assert record["counts"]["orig"]["bytes"] == 1000 and record["reply"]["src"]["port"] == 8080


def test_denied_records_and_uncounted_entries_get_no_counts() -> None:
    denied = rec("10.0.0.2", 40000, "10.0.0.3", 80, verdict="deny")
    uncounted = rec("10.0.0.2", 40000, "10.0.0.3", 80)
    FlowConntrack().annotate([denied], [conn(TCP, TCP_REPLY)])
    FlowConntrack().annotate([uncounted], [conn(TCP, TCP_REPLY, counted=False)])
    assert "counts" not in denied and "counts" not in uncounted


def test_icmp_echoes_of_a_pair_are_summed() -> None:
    echo = [
        conn(Tuple("10.0.0.2", "10.0.0.3", 1, icmp_type=8, icmp_code=0, icmp_id=i), None, 84, 84, i)
        for i in (1, 2)
    ]
    other_pair = conn(Tuple("10.0.0.2", "10.0.0.9", 1, icmp_type=8, icmp_code=0, icmp_id=3), None, 84, 84, 3)
    record = rec("10.0.0.2", None, "10.0.0.3", None, protocol="icmp", icmp={"type": 8, "code": 0})
    assert record_key(record) == (1, "10.0.0.2", 8, "10.0.0.3", None)
    FlowConntrack().annotate([record], [*echo, other_pair])
    assert record["counts"]["orig"] == {"packets": 6, "bytes": 168}


def test_an_ended_connection_gives_end_records_for_both_ends_once() -> None:
    join = FlowConntrack()
    egress = rec("10.0.0.2", 40000, "10.0.0.3", 80, direction="egress")
    ingress = rec("10.0.0.2", 40000, "10.0.0.3", 80)
    join.annotate([egress, ingress], [conn(TCP, TCP_REPLY)])
    final = Connection(
        TCP, TCP_REPLY, Counter(9, 5000), Counter(7, 900), id=5, stop_ns=int(20.5e9), destroyed=True
    )
    ends = join.ended([final, conn(TCP, TCP_REPLY, ident=99)], now=30.0)
    assert sorted(r["direction"] for r in ends) == ["egress", "ingress"]
    for end in ends:
        assert end["event"] == "end" and end["end"] == 20.5
        assert end["counts"] == {
            "orig": {"packets": 9, "bytes": 5000},
            "reply": {"packets": 7, "bytes": 900},
            "final": True,
        }
    assert "event" not in egress  # the window's record is left as it was written
    assert join.ended([final]) == []  # once


def test_the_connections_remembered_are_bounded() -> None:
    join = FlowConntrack(max_open=10)
    for port in range(50):
        c = conn(Tuple("10.0.0.2", "10.0.0.3", 6, port, 80), None, ident=port + 1)
        join.annotate([rec("10.0.0.2", port, "10.0.0.3", 80)], [c])
    assert len(join.open) == 10 and join.evicted == 40


def test_the_flows_table_shows_the_connections_bytes_each_way() -> None:
    from vpcnet.cli.flows import table_line

    base = rec("10.0.0.2", 40000, "10.0.0.3", 80, node="n1", reason="no-policy", packets=1, bytes=60)
    assert "conntrack" not in table_line(base)
    FlowConntrack().annotate([base], [conn(TCP, TCP_REPLY)])
    assert "(conntrack 1000 B/3 pkt out, 200 B/2 pkt back)" in table_line(base)
    base["event"] = "end"
    assert "(ended, conntrack 1000 B/3 pkt out" in table_line(base)
