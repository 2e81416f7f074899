"""A TCP connection between two network namespaces carrying a known number of bytes each way: what the flow
log's conntrack counters are checked against (tests/root/policy/test_flow_bytes_kernel.py and
tests/root/probe/test_lab_flow_bytes.py)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from vpcnet.dataplane import nsenter

TIMEOUT = 30.0
# Per packet, conntrack counts the IP and TCP headers (with options) too; GRO may merge segments, so a
# direction counts at least one packet and at most this many bytes of headers per packet counted.
HEADERS = 80
TCPI_BYTES_SENT = 200  # struct tcp_info: __u64 tcpi_bytes_sent (data bytes sent, retransmissions included)


@dataclass(frozen=True)
class Transfer:
    source_port: int
    sent: int  # the payload each way
    answered: int
    sent_on_wire: int  # the same with what TCP sent again (tcpi_bytes_sent), which conntrack counts too
    answered_on_wire: int


def bytes_sent(sock: socket.socket, payload: int) -> int:
    """The data bytes sock put on the wire, retransmissions included (payload where the kernel's tcp_info
    is too old to say)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < TCPI_BYTES_SENT + 8:
        return payload
    return max(payload, int.from_bytes(info[TCPI_BYTES_SENT : TCPI_BYTES_SENT + 8], "little"))


@dataclass(frozen=True)
class End:
    netns: str  # a path: /run/netns/NAME
    ip: str


def transfer(src: End, dst: End, port: int, sent: int, answered: int, source_port: int = 0) -> Transfer:
    """src connects to dst:port (a listener made here), sends `sent` bytes, reads `answered` bytes back,
    and both ends close."""
    with nsenter.entered(dst.netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with nsenter.entered(src.netns):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((dst.ip, port))
    server.listen(1)
    server.settimeout(TIMEOUT)
    errors: list[BaseException] = []
    served: list[int] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                got = 0
                while got < sent:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError(f"the client closed after {got} of {sent} bytes")
                    got += len(chunk)
                conn.sendall(b"r" * answered)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                served.append(bytes_sent(conn, answered))
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client.settimeout(TIMEOUT)
        client.bind((src.ip, source_port))
        client.connect((dst.ip, port))
        sport = int(client.getsockname()[1])
        client.sendall(b"s" * sent)
        got = 0
        while got < answered:
            chunk = client.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed after {got} of {answered} bytes")
            got += len(chunk)
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass
        on_wire = bytes_sent(client, sent)
    finally:
        client.close()
        thread.join(TIMEOUT)
        server.close()
    if errors:
        raise errors[0]
    return Transfer(sport, sent, answered, on_wire, served[0])


def counts_match(counts: dict[str, dict[str, int]], done: Transfer) -> bool:
    """Whether a record's conntrack counts are what transfer() sent each way: every payload byte at least
    once, at most what TCP put on the wire (retransmissions too) plus each counted packet's headers."""
    orig, reply = counts["orig"], counts["reply"]
    return (
        orig["packets"] >= 1
        and reply["packets"] >= 1
        and done.sent <= orig["bytes"] <= done.sent_on_wire + HEADERS * orig["packets"]
        and done.answered <= reply["bytes"] <= done.answered_on_wire + HEADERS * reply["packets"]
    )
