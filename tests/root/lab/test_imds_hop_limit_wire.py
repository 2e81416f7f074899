"""The lab IMDS's hop limit on the wire: a token answer sent with IP TTL 1 reaches a client one link away
and never one routed hop further, retransmissions included (TCP resends a segment dropped at the router
after write() returned; the TTL must still be 1 then).

Three namespaces of this test's own (random prefix, removed by name): server - router - far; the router
namespace is the near client (the node, in the lab), `far` the one behind its routing (a pod)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vpcnet.lab import netns
from vpcnet.lab.cloudd import bind_in_netns
from vpcnet.lab.ec2.httpserve import Request, Response, RunningServer, make_server

pytestmark = pytest.mark.root

SERVER, ROUTER_SIDE, ROUTER_FAR, FAR = "10.213.7.1", "10.213.7.2", "10.213.8.1", "10.213.8.2"

CLIENT = """
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=float(sys.argv[2]))
try:
    conn.request("PUT", "/latest/api/token")
    print(conn.getresponse().read().decode())
except OSError as exc:
    print("no answer:", type(exc).__name__)
"""


def token_app(request: Request) -> Response:
    return Response(200, b"the-token", "text/plain", ip_ttl=1)


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    prefix = "vht" + secrets.token_hex(3)
    ns = {"server": f"{prefix}-s", "router": f"{prefix}-r", "far": f"{prefix}-f"}
    try:
        for name in ns.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
        netns.ip_batch(
            [
                f"link add {prefix}a netns {ns['server']} type veth peer name {prefix}b netns {ns['router']}",
                f"link add {prefix}c netns {ns['router']} type veth peer name {prefix}d netns {ns['far']}",
            ]
        )
        netns.ip_batch(
            [
                f"addr add {SERVER}/24 dev {prefix}a",
                f"link set {prefix}a up",
                "link set lo up",
                f"route add default via {ROUTER_SIDE}",
            ],
            ns["server"],
        )
        netns.ip_batch(
            [
                f"addr add {ROUTER_SIDE}/24 dev {prefix}b",
                f"link set {prefix}b up",
                "link set lo up",
                f"addr add {ROUTER_FAR}/24 dev {prefix}c",
                f"link set {prefix}c up",
            ],
            ns["router"],
        )
        netns.write_sysctl(ns["router"], "net.ipv4.ip_forward", "1")
        netns.ip_batch(
            [
                f"addr add {FAR}/24 dev {prefix}d",
                f"link set {prefix}d up",
                "link set lo up",
                f"route add default via {ROUTER_FAR}",
            ],
            ns["far"],
        )
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def put_from(ns: str, timeout: float) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, SERVER, str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=True,
    )
    return out.stdout.strip()


def test_a_ttl_1_answer_reaches_the_next_link_and_never_a_hop_further(namespaces: dict[str, str]) -> None:
    server = RunningServer(make_server(token_app, bind_in_netns(namespaces["server"], SERVER, 80)))
    try:
        assert put_from(namespaces["router"], 30) == "the-token"
        # Several retransmission timeouts (200 ms, then doubling): the old server reset the TTL to 64 after
        # write() returned and the first resend delivered the token.
        assert put_from(namespaces["far"], 8).startswith("no answer"), "a routed client got the token"
        assert put_from(namespaces["router"], 30) == "the-token"  # and the server still answers
    finally:
        server.close()
