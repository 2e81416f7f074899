"""The console over a cluster, not the lab: its datastore and its node agents. Read only.

Pods, namespaces and policies come from the cluster's datastore (etcd or the Kubernetes API, chosen as the
agents choose it: VPCNET_DATASTORE_TYPE, VPCNET_DATASTORE_ENDPOINTS, KUBECONFIG). Nodes come from the API's
Node objects (Kubernetes datastore: InternalIP, zone, instance type, providerID) and from the pods
(spec.nodeName, status.hostIP; either datastore). Each node's agent is read at its address on the agents'
introspection port, or where `--agent NODE=HOST:PORT` says: /v1/ipam draws the node's ENIs, addresses and
warm pool, /v1/flows gives its flows. An agent listens on 127.0.0.1 unless INTROSPECTION_BIND_ADDRESS says
otherwise; one the console should read listens where the console reaches it. A node whose agent does not
answer is drawn with what the datastore says, and named in the flows' errors. No probe: sending packets
between pods needs the lab (`vpcnet lab console`).

`cluster_nodes` and `cluster_topology` are pure (unit-tested); `ClusterSources` does the reading.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vpcnet.cli.console.data import node_topology
from vpcnet.cli.console.sources import Matrix, agent_get, json_lines
from vpcnet.cli.topology_picture import NodeBox, PodBox, SubnetBox, Topology

AGENT_PORT = 61679
ZONE_LABEL = "topology.kubernetes.io/zone"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
FRESH = 2.0  # seconds a datastore read serves the page's next requests (it asks for several at once)


@dataclass(frozen=True)
class NodeFacts:
    """What the datastore says of a node."""

    name: str
    address: str = ""  # where its agent is reached (InternalIP, or a pod's hostIP)
    zone: str = ""
    instance_type: str = ""
    instance_id: str = ""


def cluster_nodes(node_objects: Sequence[Mapping[str, Any]], pods: Sequence[Any]) -> dict[str, NodeFacts]:
    """Every node the API's Node objects or the pods name, with the facts each gives."""
    nodes: dict[str, NodeFacts] = {}
    for obj in node_objects:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            continue
        labels = meta.get("labels") or {}
        addresses = (obj.get("status") or {}).get("addresses") or []
        internal = [a.get("address") for a in addresses if a.get("type") == "InternalIP" and a.get("address")]
        provider = str((obj.get("spec") or {}).get("providerID") or "")
        nodes[name] = NodeFacts(
            name,
            str(internal[0]) if internal else "",
            str(labels.get(ZONE_LABEL, "")),
            str(labels.get(INSTANCE_TYPE_LABEL, "")),
            provider.rsplit("/", 1)[-1] if provider.startswith("aws://") else "",
        )
    for pod in pods:
        if not pod.node_name or pod.host_network:
            continue
        known = nodes.get(pod.node_name) or NodeFacts(pod.node_name)
        host_ip = str(pod.status_extra.get("hostIP") or "")
        if not known.address and host_ip:
            known = replace(known, address=host_ip)
        nodes[pod.node_name] = known
    return dict(sorted(nodes.items()))


def cluster_topology(
    nodes: Mapping[str, NodeFacts],
    pods: Sequence[Any],
    ipams: Mapping[str, Mapping[str, Any] | str],
    name: str = "cluster",
) -> Topology:
    """The VPC as far as the datastore and the agents tell: a node whose agent gave its /v1/ipam sits in its
    primary ENI's subnet with its ENIs; one whose agent did not (ipams[node] is the error, or missing) sits
    in a box for its zone, with the datastore's pods. Pods on no ENI of their node are drawn under it."""
    subnets: dict[str, SubnetBox] = {}
    placed: dict[str, list[NodeBox]] = {}
    pods_of: dict[str, list[PodBox]] = {}
    for pod in pods:
        if pod.node_name and pod.pod_ip and not pod.host_network:
            pods_of.setdefault(pod.node_name, []).append(PodBox(pod.ref, pod.pod_ip))
    for node in nodes.values():
        ipam = ipams.get(node.name)
        mine = sorted(pods_of.get(node.name, []), key=lambda p: p.ref)
        if isinstance(ipam, Mapping):
            part = node_topology(node.name, ipam)
            for subnet in part.subnets:
                subnets.setdefault(subnet.id, replace(subnet, nodes=()))
            box = part.nodes()[0]
            on_enis = {p.ref for e in box.enis for p in e.pods}
            box = replace(
                box,
                instance_type=box.instance_type or node.instance_type,
                instance_id=box.instance_id or node.instance_id,
                other_pods=tuple(p for p in mine if p.ref not in on_enis),
            )
            home = next((e.subnet_id for e in box.enis if e.device_index == 0), "")
        else:
            status = f"not read: {ipam}" if isinstance(ipam, str) else "not read"
            box = NodeBox(
                node.name, node.instance_id, node.instance_type, node.address, status, (), tuple(mine)
            )
            home = f"zone {node.zone}" if node.zone else "zone unknown"
            subnets.setdefault(home, SubnetBox(home, "", node.zone, home, ()))
        placed.setdefault(home, []).append(box)
    boxes = tuple(
        replace(subnet, nodes=tuple(placed.get(sid, ()))) for sid, subnet in sorted(subnets.items())
    )
    return Topology(name, "", "", boxes)


def parse_agent(text: str) -> tuple[str, tuple[str, int]]:
    """NODE=HOST:PORT (the --agent option); ValueError names what is wrong."""
    node, sep, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not sep or not node or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--agent {text!r}: expected NODE=HOST:PORT")
    return node, (host.strip("[]"), int(port))


class ClusterSources:
    """A cluster's datastore (settings: vpcnet.datastore.settings.DatastoreSettings) and its agents.
    netns: reach the agents from inside this network namespace (its name under /run/netns), where the
    nodes' network is not the console's own (as for the lab's nodes)."""

    can_probe = False

    def __init__(
        self,
        settings: Any,
        agent_port: int = AGENT_PORT,
        agents: Mapping[str, tuple[str, int]] | None = None,
        netns: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.agent_port = agent_port
        self.agents = dict(agents or {})
        self.netns = netns
        self.timeout = timeout
        self._read_at = 0.0
        self._read: tuple[list[Any], dict[str, NodeFacts]] | None = None
        self._lock = asyncio.Lock()

    async def _cluster(self) -> tuple[list[Any], dict[str, NodeFacts]]:
        async with self._lock:
            if self._read is None or time.monotonic() - self._read_at > FRESH:
                self._read = await self._read_datastore()
                self._read_at = time.monotonic()
            return self._read

    async def _read_datastore(self) -> tuple[list[Any], dict[str, NodeFacts]]:
        from vpcnet.api import Pod, parse_resource
        from vpcnet.cli.resources import kind_paths
        from vpcnet.datastore.kube import KubeResourceStore
        from vpcnet.datastore.open import open_store
        from vpcnet.datastore.types import DatastoreError

        try:
            opened = await open_store(self.settings)
            try:
                items, _ = await opened.store.snapshot(set(kind_paths().values()))
                node_objects: list[Any] = []
                if isinstance(opened.store, KubeResourceStore):
                    node_objects = (await opened.store.api.list("/api/v1/nodes")).items
            finally:
                await opened.close()
        except DatastoreError as exc:  # the server answers 503 naming it
            raise OSError(f"datastore: {exc}") from exc
        resources = [parse_resource(item.body, str(item.ref)) for item in items]
        pods = [r for r in resources if isinstance(r, Pod)]
        nodes = cluster_nodes(node_objects, pods)
        for name in self.agents:
            nodes.setdefault(name, NodeFacts(name))
        return resources, nodes

    def agent_address(self, node: NodeFacts) -> tuple[str, int] | None:
        if node.name in self.agents:
            return self.agents[node.name]
        return (node.address, self.agent_port) if node.address else None

    async def _from_agents(self, nodes: Mapping[str, NodeFacts], path: str) -> dict[str, bytes | str]:
        async def one(node: NodeFacts) -> bytes | str:
            address = self.agent_address(node)
            if address is None:
                return "no address known for its agent (--agent NODE=HOST:PORT)"
            try:
                return await agent_get(path, self.netns, address, self.timeout)
            except (OSError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                return f"its agent at {address[0]}:{address[1]} does not answer: {why}"

        got = await asyncio.gather(*(one(n) for n in nodes.values()))
        return dict(zip(nodes, got, strict=True))

    async def topology(self) -> Topology:
        from vpcnet.api import Pod

        resources, nodes = await self._cluster()
        ipams: dict[str, Mapping[str, Any] | str] = {}
        for name, got in (await self._from_agents(nodes, "/v1/ipam")).items():
            try:
                ipams[name] = json.loads(got) if isinstance(got, bytes) else got
            except ValueError as exc:
                ipams[name] = f"its agent's /v1/ipam is not JSON: {exc}"
        return cluster_topology(nodes, [r for r in resources if isinstance(r, Pod)], ipams)

    async def resources(self) -> list[Any]:
        return (await self._cluster())[0]

    def running_pods(self) -> list[str]:
        return []  # the console then takes the pods with an address from the datastore

    async def flows(self) -> dict[str, list[dict[str, Any]] | str]:
        _, nodes = await self._cluster()
        out: dict[str, list[dict[str, Any]] | str] = {}
        for name, got in (await self._from_agents(nodes, "/v1/flows?follow=0")).items():
            try:
                out[name] = json_lines(got) if isinstance(got, bytes) else got
            except ValueError as exc:
                out[name] = f"its agent's flows are not JSON lines: {exc}"
        return out

    async def probe(self, port: int, protocol: str) -> Matrix:
        raise OSError("probing sends packets between pods: that needs the lab (`vpcnet lab console`)")
