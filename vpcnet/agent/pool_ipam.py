"""The agent's address manager in Calico mode (VPCNET_MODE=calico): pool IPAM, node record, routes, cleanup.

start(): read the instance from IMDS, register the node in the datastore (a lease-bound record with its
address, subnet and VTEP MAC), turn the primary ENI's source/dest check off (pod addresses are not the
ENI's, and the VPC drops them otherwise), set ctx.allocator/ctx.node, then run the route sync and the
gone-node cleanup as tasks.

Settings come from ctx.config (vpcnet/agent/config.py): ipam_node_grace (VPCNET_IPAM_NODE_GRACE_SECONDS,
900: how long a node must be gone before its blocks are released; Calico's LeakGracePeriod), ipam_node_ttl
(VPCNET_IPAM_NODE_TTL_SECONDS, 15: the node record's lease), route_resync_interval
(VPCNET_ROUTE_RESYNC_SECONDS, 60), source_dest_check (VPCNET_SOURCE_DEST_CHECK, false: leave it alone when
true). With no IPPool in the datastore, the first agent creates one as calico-node does, from the
default_pool_* settings (CALICO_IPV4POOL_CIDR, _BLOCK_SIZE, _VXLAN, _IPIP, _NAT_OUTGOING).
The pods' families are ENABLE_IPv4 / ENABLE_IPv6 (both: dual stack, one address of each). With IPv6 on,
the node's record carries its IPv6 address and /64 (from IMDS; a node without them is refused at start),
and with no IPv6 pool the first agent creates one from CALICO_IPV6POOL_CIDR, _BLOCK_SIZE, _VXLAN and
_NAT_OUTGOING (default-ipv6-ippool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

from vpcnet.agent.config import AgentConfig
from vpcnet.agent.context import AgentContext
from vpcnet.agent.http import Response
from vpcnet.agent.pool_routes import PoolRouteSync
from vpcnet.cloud.node import NodeInfo
from vpcnet.dataplane.poolroutes import vtep_mac, vtep_mac6
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolgc import cleanup_gone_nodes
from vpcnet.ipam.poolnodes import NodeRegistration

log = logging.getLogger(__name__)
UPLINK = "eth0"
DEFAULT_POOL_NAME = "default-ipv4-ippool"
DEFAULT_POOL6_NAME = "default-ipv6-ippool"


class NodeWithoutIpv6(Exception):
    """IPv6 pods were asked for on an instance without an IPv6 address (its subnet has no IPv6 CIDR)."""


def node_labels(name: str, node: NodeInfo) -> dict[str, str]:
    """The labels IPPool nodeSelectors match (the well-known Kubernetes node labels)."""
    return {
        "kubernetes.io/hostname": name,
        "topology.kubernetes.io/zone": node.availability_zone,
        "topology.kubernetes.io/region": node.region,
        "node.kubernetes.io/instance-type": node.instance_type,
    }


async def disable_source_dest_check(ctx: AgentContext, node: NodeInfo) -> None:
    from vpcnet.cloud.boto_ec2 import Boto3Ec2

    cfg = ctx.config
    ec2 = Boto3Ec2(node.region, endpoint_url=cfg.ec2_endpoint, rate_limit=cfg.ec2_rate_limit)
    await ec2.disable_source_dest_check(node.primary_eni_id)
    log.info("source/dest check off on %s (pod addresses come from the pool)", node.primary_eni_id)


def default_pool_document(cfg: AgentConfig, version: int = 4) -> dict[str, Any]:
    """The pool calico-node creates when there is none of that IP version, from the same settings
    (CALICO_IPV4POOL_* or CALICO_IPV6POOL_*)."""
    if version == 4:
        name, spec = (
            DEFAULT_POOL_NAME,
            {
                "cidr": cfg.default_pool_cidr,
                "blockSize": cfg.default_pool_block_size,
                "vxlanMode": cfg.default_pool_vxlan_mode,
                "ipipMode": cfg.default_pool_ipip_mode,
                "natOutgoing": cfg.default_pool_nat_outgoing,
            },
        )
    else:
        name, spec = (
            DEFAULT_POOL6_NAME,
            {
                "cidr": cfg.default_pool6_cidr,
                "blockSize": cfg.default_pool6_block_size,
                "vxlanMode": cfg.default_pool6_vxlan_mode,
                "natOutgoing": cfg.default_pool6_nat_outgoing,
            },
        )
    document = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    }
    from vpcnet.api.errors import Fault, ValidationError
    from vpcnet.api.ippool import IPPool
    from vpcnet.api.loader import parse_resource

    where = f"the default IPv{version} IPPool (CALICO_IPV{version}POOL_* environment)"
    pool = parse_resource(document, where)  # raises naming the field
    if isinstance(pool, IPPool) and pool.cidr.version != version:
        raise ValidationError([Fault(where, "spec.cidr", f"{spec['cidr']} is not an IPv{version} CIDR")])
    return document


def pod_versions(cfg: AgentConfig) -> tuple[int, ...]:
    """The pods' IP versions: (4,), (6,) or (4, 6)."""
    return tuple(v for v, on in ((4, cfg.enable_ipv4), (6, cfg.enable_ipv6)) if on)


async def ensure_default_pool(store: ResourceStoreLike, cfg: AgentConfig) -> bool:
    """Create the default pool of each of the pods' IP versions that has no IPPool yet (first agent wins);
    True when this one created one."""
    from vpcnet.ipam.poolobjects import IPPOOL_KIND
    from vpcnet.ipam.poolstore import parse_pool_config

    listed, _ = await store.list(IPPOOL_KIND)
    pools = parse_pool_config(listed).pools
    if listed and not pools:
        return False  # pools that do not parse: not ours to add to
    have = {pool.cidr.version for pool in pools}
    made = False
    for version in pod_versions(cfg):
        if version in have:
            continue
        document = default_pool_document(cfg, version)
        created = await store.create(document)
        if created is not None:
            log.info("created the default IPPool %s", document["spec"])
        made |= created is not None
    return made


async def warn_if_ipip_unsupported(store: ResourceStoreLike) -> None:
    """Say at start, once and plainly, that IP-in-IP pools cannot work on this kernel."""
    from vpcnet.ipam.poolstore import read_pool_config

    if os.path.isdir("/sys/module/ipip"):
        return
    config = await read_pool_config(store)
    for pool in config.pools:
        if pool.encapsulation == "ipip" and not pool.disabled:
            log.error(
                "IPPool %s has ipipMode %s but this kernel has no ipip module: its addresses on other nodes "
                "cannot be reached from here; use vxlanMode instead",
                pool.name,
                pool.ipip_mode,
            )


class PoolIpamComponent:
    name = "ipam"

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.opened: Any = None  # vpcnet.datastore.open.OpenStore
        self.store: ResourceStoreLike | None = None
        self.registration: NodeRegistration | None = None
        self.routes: PoolRouteSync | None = None
        self.allocator: PoolAllocator | None = None
        self._tasks: list[asyncio.Task[None]] = []
        cfg = ctx.config
        self.grace = cfg.ipam_node_grace
        self.ttl = max(5, int(cfg.ipam_node_ttl))
        self.resync = max(1.0, cfg.route_resync_interval)
        self.keep_sdc = cfg.source_dest_check
        self.cleanups = 0

    async def start(self) -> None:
        from vpcnet.cloud.imds import Imds
        from vpcnet.datastore.open import open_store

        cfg = self.ctx.config
        node = await Imds(cfg.imds_endpoint).node_info()
        name = cfg.node_name or node.instance_id
        self.opened = await open_store(cfg.datastore_settings())
        self.store = store = self.opened.store
        labels = node_labels(name, node)
        ipv6 = cfg.enable_ipv6
        if ipv6 and (node.primary_ip6 is None or node.subnet6_cidr is None):
            raise NodeWithoutIpv6(
                f"ENABLE_IPv6=true but instance {node.instance_id} has no IPv6 address on its primary ENI "
                "(its subnet needs an IPv6 CIDR)"
            )
        record = NodeRecord(
            name,
            node.primary_ip,
            node.subnet_cidr,
            vtep_mac(name),
            node.availability_zone,
            labels,
            address6=node.primary_ip6 if ipv6 else None,
            subnet6=node.subnet6_cidr if ipv6 else None,
            vtep_mac6=vtep_mac6(name) if ipv6 else "",
            uplink_mac=node.primary_mac if ipv6 else "",
        )
        if not self.keep_sdc:
            await disable_source_dest_check(self.ctx, node)
        await ensure_default_pool(store, cfg)
        await warn_if_ipip_unsupported(store)
        self.registration = NodeRegistration(store, record, self.ttl)
        await self.registration.start()
        self.allocator = PoolAllocator(PoolIpam(store, name, labels), pod_versions(cfg))
        from vpcnet.dataplane.poolroutes_apply import link_mtu

        mtu = await link_mtu(UPLINK)  # the VXLAN device gets this less its 50 bytes of headers
        self.routes = PoolRouteSync(store, record, uplink=UPLINK, uplink_mtu=mtu, resync_interval=self.resync)
        self.ctx.node = node
        self.ctx.allocator = self.allocator
        self.ctx.introspection.route("/v1/pool-ipam", self._introspect)
        self._tasks = [
            asyncio.create_task(self.routes.run(), name="pool-routes"),
            asyncio.create_task(self._cleanup_loop(), name="pool-cleanup"),
        ]
        # Serve once the routes reflect the datastore (a pod started before would be unreachable).
        try:
            await asyncio.wait_for(self.routes.synced.wait(), 30)
        except TimeoutError:  # serve anyway: the route sync keeps trying, and pods on this node work
            log.warning("pool routes not synced from the datastore after 30 s; serving anyway")
        self.allocator.set_ready()

    async def _cleanup_loop(self) -> None:
        period = max(5.0, min(60.0, self.grace / 2 or 5.0))
        while True:
            await asyncio.sleep(period)
            try:
                assert self.store is not None
                done = await cleanup_gone_nodes(self.store, self.grace)
                self.cleanups += 1
                if done.released_addresses or done.released_blocks:
                    log.info(
                        "released %d addresses and blocks %s of gone nodes",
                        done.released_addresses,
                        done.released_blocks,
                    )
            except Exception as err:
                log.warning("gone-node cleanup failed: %s", err)

    async def _introspect(self, query: str) -> Response:
        ipam = self.allocator.ipam if self.allocator else None
        body = {
            "routes": self.routes.status() if self.routes else None,
            "counters": vars(ipam.counters) if ipam else None,
            "cleanups": self.cleanups,
        }
        return 200, "application/json", json.dumps(body, indent=2).encode()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception as err:  # stop() must not raise; the task's failure is only reported
                    log.warning("%s task ended with an error while stopping: %s", task.get_name(), err)
        self._tasks = []
        if self.registration is not None:
            # Not withdrawn: an agent restart must not make every node drop its routes to us. The lease
            # runs out by itself if we do not come back.
            try:
                await self.registration.stop(withdraw=False)
            except Exception as err:  # stop() must not raise; the lease expires by itself
                log.warning("ignored while stopping the node registration (its lease expires): %s", err)
            self.registration = None
        if self.opened is not None:
            try:
                await self.opened.close()
            except Exception as err:  # stop() must not raise; the connection is dropped with the process
                log.debug("ignored while closing the datastore: %s", err)
            self.opened = None
            self.store = None

    def ready(self) -> bool:
        return self.allocator is not None and self.allocator.ready()


def make_component(ctx: AgentContext) -> PoolIpamComponent:
    return PoolIpamComponent(ctx)
