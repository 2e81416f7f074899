"""Flow logs with conntrack's counters: real connections through a node namespace's policy chains, the flow
log's records joined to a real conntrack dump (accounting turned on in that namespace as the agent does),
and the bytes counted each way match what was sent; a connection's end (a destroy event) gives its final
counters.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import policy_netkit as netkit
import pytest
import tcp_transfer

from vpcnet.agent.flow_conntrack import FlowConntrack
from vpcnet.agent.flow_logs import FlowLog
from vpcnet.api import load_documents
from vpcnet.dataplane import nsenter
from vpcnet.dataplane.calc.feed import feed_resource
from vpcnet.dataplane.conntrack import Connection
from vpcnet.dataplane.conntrack_socket import ConntrackDumper, ConntrackEvents, enable_accounting
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.nflog_socket import NflogSocket
from vpcnet.dataplane.policy_backend import BACKENDS, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import FlowLogSpec

pytestmark = pytest.mark.root

NS = "shop"
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80, protocol: TCP}, {port: 53, protocol: UDP}]
"""
SENT = 300_000  # web -> db
ANSWERED = 70_000  # db -> web


def pod_yaml(name: str, ip: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec: {{nodeName: n1, containers: [{{name: c, image: x}}]}}
status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"""


@pytest.fixture
def node() -> Iterator[netkit.Node]:
    with netkit.node() as made:
        yield made


def transfer(src: netkit.Pod, dst: netkit.Pod, port: int, sent: int, answered: int) -> tcp_transfer.Transfer:
    return tcp_transfer.transfer(
        tcp_transfer.End(f"/run/netns/{src.netns}", src.ip),
        tcp_transfer.End(f"/run/netns/{dst.netns}", dst.ip),
        port,
        sent,
        answered,
        netkit.fresh_source_port(),
    )


def collect(sock: NflogSocket, flow_log: FlowLog, want_packets: int) -> None:
    async def run() -> None:
        sock.start_reading(flow_log.add)
        deadline = time.monotonic() + 20
        while flow_log.packets < want_packets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the kernel's batch timer (5 centiseconds) and anything late

    asyncio.run(run())


def setup(node: netkit.Node, backend: str) -> tuple[netkit.Pod, netkit.Pod, PolicyCalculator, FlowLogSpec]:
    web = node.add_pod("web", k8s_namespace=NS)
    db = node.add_pod("db", k8s_namespace=NS)
    text = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n" + POLICY
    for pod in (web, db):
        text += "---\n" + pod_yaml(pod.name, pod.ip)
    spec = FlowLogSpec("all", group=28, allow_rate=0)
    calc = PolicyCalculator("n1", ["eni"], spec)
    for resource in load_documents(text, "test"):
        feed_resource(calc, resource)
    dataplane = make_dataplane(backend, SubprocessRunner(node.netns))
    assert asyncio.run(dataplane.apply(calc.desired())).total > 0
    return web, db, calc, spec


def records_of(records: list[dict[str, Any]], src: netkit.Pod, sport: int) -> list[dict[str, Any]]:
    return [r for r in records if r["src"]["ip"] == src.ip and r["src"]["port"] == sport]


def assert_counts_match(counts: dict[str, Any], done: tcp_transfer.Transfer) -> None:
    assert tcp_transfer.counts_match(counts, done), (counts, done)


@pytest.mark.parametrize("backend", BACKENDS)
def test_allowed_flows_carry_the_bytes_sent_each_way(node: netkit.Node, backend: str) -> None:
    web, db, calc, spec = setup(node, backend)
    netns = f"/run/netns/{node.netns}"
    enable_accounting(netns)
    assert nsenter.read_sysctl("net/netfilter/nf_conntrack_acct", netns) == "1"
    sock = NflogSocket(spec.group, spec.snaplen, netns=netns)
    sock.open()
    dumper = ConntrackDumper(netns)
    try:
        done = transfer(web, db, 80, SENT, ANSWERED)
        sport = done.source_port
        flow_log = FlowLog(calc, "n1", sink=None, conntrack=FlowConntrack())
        collect(sock, flow_log, want_packets=2)  # the first packet, at web's egress and db's ingress
        flows = flow_log.drain()
        records = flow_log.emit(flows, dumper.dump())
    finally:
        sock.close()
        dumper.close()

    found = records_of(records, web, sport)
    assert {r["direction"] for r in found} == {"egress", "ingress"}, records
    for rec in found:
        assert rec["verdict"] == "allow" and rec["dst"]["port"] == 80
        assert rec["packets"] == 1  # NFLOG saw the first packet only
        assert_counts_match(rec["counts"], done)
        assert rec["counts"]["final"] is False
        assert rec["reply"] == {"src": {"ip": db.ip, "port": 80}, "dst": {"ip": web.ip, "port": sport}}
    assert flow_log.conntrack is not None and flow_log.conntrack.status()["conntrackJoined"] == 2


def test_without_accounting_no_counts_are_made_up(node: netkit.Node) -> None:
    web, db, calc, spec = setup(node, "iptables")
    netns = f"/run/netns/{node.netns}"
    nsenter.write_sysctl("net/netfilter/nf_conntrack_acct", "0", netns)
    sock = NflogSocket(spec.group, spec.snaplen, netns=netns)
    sock.open()
    dumper = ConntrackDumper(netns)
    try:
        sport = transfer(web, db, 80, 5000, 100).source_port
        flow_log = FlowLog(calc, "n1", sink=None, conntrack=FlowConntrack())
        collect(sock, flow_log, want_packets=2)
        connections = dumper.dump()
        records = flow_log.emit(flow_log.drain(), connections)
    finally:
        sock.close()
        dumper.close()
    ours = [c for c in connections if c.orig.src_port == sport]
    assert ours and all(not c.counted for c in ours)  # the entry is there, without counters
    found = records_of(records, web, sport)
    assert found and all("counts" not in r for r in found)


def test_a_connection_that_ends_gets_an_end_record_with_final_counts(node: netkit.Node) -> None:
    web, db, calc, spec = setup(node, "iptables")
    netns = f"/run/netns/{node.netns}"
    enable_accounting(netns)
    # The closed connection's TIME_WAIT entry would live two minutes; here it ends within seconds.
    nsenter.write_sysctl("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "1", netns)
    nsenter.write_sysctl("net/netfilter/nf_conntrack_tcp_timeout_close", "1", netns)
    sock = NflogSocket(spec.group, spec.snaplen, netns=netns)
    sock.open()
    events = ConntrackEvents(netns)
    events.open()
    dumper = ConntrackDumper(netns)
    ended: list[Connection] = []
    try:
        done = transfer(web, db, 80, SENT, ANSWERED)
        sport = done.source_port
        flow_log = FlowLog(calc, "n1", sink=None, conntrack=FlowConntrack())
        collect(sock, flow_log, want_packets=2)
        flow_log.emit(flow_log.drain(), dumper.dump())
        before = flow_log.records

        async def wait_for_end() -> None:
            events.start_reading(lambda conns: (ended.extend(conns), flow_log.ended(conns)))
            # A dump reaps the expired entries it meets (conntrack's own collector may wait up to a
            # minute): the agent dumps each window while it holds joined connections.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(c.orig.src_port == sport for c in ended):
                await asyncio.to_thread(dumper.dump)
                await asyncio.sleep(0.5)

        asyncio.run(wait_for_end())
    finally:
        sock.close()
        events.close()
        dumper.close()

    mine = [c for c in ended if c.orig.src_port == sport]
    assert mine, f"no destroy event for port {sport} in {len(ended)} events"
    end_records = [r for r in list(flow_log.recent)[before:] if r.get("event") == "end"]
    assert {r["direction"] for r in end_records} == {"egress", "ingress"}, end_records
    for rec in end_records:
        assert rec["src"]["port"] == sport and rec["dst"]["pod"] == "db"
        assert rec["counts"]["final"] is True
        assert_counts_match(rec["counts"], done)
        assert rec["end"] >= rec["start"]


def echo(src: netkit.Pod, dst: netkit.Pod, count: int, payload: int, ident: int) -> int:
    """`count` ICMP echo requests of `payload` bytes from src to dst (one echo id); the replies received."""
    with netkit.entered(src.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    replies = 0
    try:
        sock.settimeout(5)
        for seq in range(count):
            body = bytes(payload)
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            checksum = _checksum(header + body)
            sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + body, (dst.ip, 0))
            while True:  # the raw socket sees every ICMP packet of the pod: wait for this one's reply
                data, _ = sock.recvfrom(65536)
                header_len = (data[0] & 0x0F) * 4
                kind, _code, _sum, got_id, got_seq = struct.unpack_from("!BBHHH", data, header_len)
                if kind == 0 and (got_id, got_seq) == (ident, seq):
                    replies += 1
                    break
    finally:
        sock.close()
    return replies


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_icmp_echoes_carry_the_bytes_each_way(node: netkit.Node) -> None:
    web, db, calc, spec = setup(node, "iptables")
    netns = f"/run/netns/{node.netns}"
    enable_accounting(netns)
    sock = NflogSocket(spec.group, spec.snaplen, netns=netns)
    sock.open()
    dumper = ConntrackDumper(netns)
    count, payload = 5, 1000
    try:
        # db -> web: no policy selects web, and db's egress has none: allowed, logged by "no policy decided"
        assert echo(db, web, count, payload, ident=4242) == count
        flow_log = FlowLog(calc, "n1", sink=None, conntrack=FlowConntrack())
        collect(sock, flow_log, want_packets=2)
        records = flow_log.emit(flow_log.drain(), dumper.dump())
    finally:
        sock.close()
        dumper.close()
    found = [
        r for r in records if r["protocol"] == "icmp" and r["src"]["ip"] == db.ip and r["dst"]["ip"] == web.ip
    ]
    assert {r["direction"] for r in found} == {"egress", "ingress"}, records
    size = 20 + 8 + payload  # IP header, ICMP header, payload: no segmentation, no options
    for rec in found:
        assert rec["verdict"] == "allow" and rec["icmp"] == {"type": 8, "code": 0}
        assert rec["counts"]["orig"] == {"packets": count, "bytes": count * size}, rec
        assert rec["counts"]["reply"] == {"packets": count, "bytes": count * size}, rec
