"""The pod server's request handling (the serving itself is tested as root in tests/root/probe)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vpcnet.lab.podserver import ControlServer, PodServer, PortSpec


def test_port_spec_parse() -> None:
    assert PortSpec.parse({"port": 80}, "p") == PortSpec(80, "TCP")
    assert PortSpec.parse({"port": 9, "protocol": "SCTP"}, "p") == PortSpec(9, "SCTP")
    for raw, message in (
        ([80], "p: expected an object"),
        ({"port": 0}, "p.port: 0 is not a port"),
        ({"port": True}, "p.port: True is not a port"),
        ({"port": 80, "protocol": "tcp"}, "p.protocol: 'tcp' is not one of TCP, UDP, SCTP"),
    ):
        with pytest.raises(ValueError, match=message):
            PortSpec.parse(raw, "p")


def dispatch(request: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await ControlServer(PodServer()).dispatch(request)

    return asyncio.run(go())


def test_control_requests() -> None:
    assert dispatch({"op": "ping"})["ok"]
    assert dispatch({"op": "list"}) == {"ok": True, "pods": {}}
    assert dispatch({"op": "stop", "pod": "x/a"}) == {"ok": True, "changed": False}
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        dispatch({"op": "nope"})
    with pytest.raises(ValueError, match="JSON object"):
        dispatch([1])
    with pytest.raises(ValueError, match="serve needs pod"):
        dispatch({"op": "serve", "pod": 1, "netns": "/x", "ports": []})
    with pytest.raises(KeyError):
        dispatch({"op": "serve"})
