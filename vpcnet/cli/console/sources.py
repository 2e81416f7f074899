"""Where the console reads from in the lab (every node, from inside its namespace), and the agents' HTTP.

Lab: the EC2 state and kubelet records (`lab status`), the Kubernetes API the lab serves, and each node's
agent on its own 127.0.0.1 (a socket made inside the node's namespace, then used from the event loop, as
`vpcnet lab flows` does). A probe sends packets between pods (`vpcnet lab probe`) and changes nothing.
A cluster outside the lab is read by vpcnet.cli.console.cluster (its datastore and its agents); no probe.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpcnet.cli.topology_picture import Topology

AGENT = ("127.0.0.1", 61679)
Matrix = dict[str, dict[str, bool]]


async def agent_get(
    path: str, netns: str | None, address: tuple[str, int] = AGENT, timeout: float = 5.0
) -> bytes:
    """GET path from an agent's introspection server, from inside netns (a /run/netns name) when given."""
    from vpcnet.dataplane import nsenter

    with nsenter.entered(f"/run/netns/{netns}" if netns else None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {address[0]}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in status + " ":
        raise OSError(f"{path}: the agent answered {status!r}: {body[:200].decode(errors='replace')}")
    return body


def json_lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


async def api_resources(kubeconfig: Path) -> list[Any]:
    """Every object of the kinds vpcnet knows, from the Kubernetes API (what `lab probe --compare` reads)."""
    from vpcnet.api import parse_resource
    from vpcnet.cli.resources import kind_paths
    from vpcnet.datastore.open import open_kube_store

    store = await open_kube_store(kubeconfig, sync_timeout=30)
    try:
        items, _ = await store.snapshot(set(kind_paths().values()))
    finally:
        await store.close()
    return [parse_resource(item.body, str(item.ref)) for item in items]


class LabSources:
    """The running lab named by `layout`."""

    can_probe = True

    def __init__(self, layout: Any) -> None:
        self.layout = layout

    def _status(self) -> dict[str, Any]:
        from vpcnet.lab.labctl import status

        doc = status(self.layout)
        if not doc["up"]:
            raise OSError(f"lab {self.layout.prefix} is not up")
        return doc

    def node_names(self) -> list[str]:
        return [n["name"] for n in self._status()["nodes"]]

    async def topology(self) -> Topology:
        from vpcnet.cli.topology_picture import lab_pods, topology

        doc = self._status()
        return topology(doc, lab_pods(self.layout, [n["name"] for n in doc["nodes"]]))

    async def resources(self) -> list[Any]:
        return await api_resources(self.layout.kubeconfig)

    def running_pods(self) -> list[str]:
        from vpcnet.cli.labprobe import probe_endpoints

        return [p.name for p in probe_endpoints(self.layout)]

    async def flows(self) -> dict[str, list[dict[str, Any]] | str]:
        names = self.node_names()

        async def one(name: str) -> list[dict[str, Any]] | str:
            try:
                return json_lines(await agent_get("/v1/flows?follow=0", self.layout.node_netns(name)))
            except (OSError, TimeoutError, ValueError) as exc:
                return f"its agent does not answer: {exc or type(exc).__name__}"

        got = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, got, strict=True))

    async def probe(self, port: int, protocol: str) -> Matrix:
        from vpcnet.cli.labprobe import probe_endpoints
        from vpcnet.lab.probe import probe_matrix

        pods = probe_endpoints(self.layout)
        report = await probe_matrix(pods, pods, port, protocol, timeout=0.5, attempts=2)
        return report.matrix()


def pod_refs(resources: Sequence[Any]) -> list[str]:
    """Pods with an address, from the API (where no kubelet records say which run)."""
    from vpcnet.api import Pod

    return sorted(r.ref for r in resources if isinstance(r, Pod) and r.pod_ip)
