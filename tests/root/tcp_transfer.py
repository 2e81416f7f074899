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


@dataclass(frozen=True)
class End:
    netns: str  # a path: /run/netns/NAME
    ip: str


def transfer(src: End, dst: End, port: int, sent: int, answered: int, source_port: int = 0) -> int:
    """src connects to dst:port (a listener made here), sends `sent` bytes, reads `answered` bytes back,
    and both ends close; the client's source port."""
    with nsenter.entered(dst.netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with nsenter.entered(src.netns):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((dst.ip, port))
    server.listen(1)
    server.settimeout(TIMEOUT)
    errors: list[BaseException] = []

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
    finally:
        client.close()
        thread.join(TIMEOUT)
        server.close()
    if errors:
        raise errors[0]
    return sport


def counts_match(counts: dict[str, dict[str, int]], sent: int, answered: int) -> bool:
    """Whether a record's conntrack counts are what transfer() sent each way (payload plus headers)."""
    orig, reply = counts["orig"], counts["reply"]
    return (
        orig["packets"] >= 1
        and reply["packets"] >= 1
        and sent <= orig["bytes"] <= sent + HEADERS * orig["packets"]
        and answered <= reply["bytes"] <= answered + HEADERS * reply["packets"]
    )
