"""The agent's address manager in Calico mode (VPCNET_MODE=calico): pool IPAM, node record, routes, cleanup.

start(): read the instance from IMDS, register the node in the datastore (a lease-bound record with its
address, subnet and VTEP MAC), turn the primary ENI's source/dest check off (pod addresses are not the
ENI's, and the VPC drops them otherwise), set ctx.allocator/ctx.node, then run the route sync and the
gone-node cleanup as tasks.

Settings (environment): VPCNET_IPAM_NODE_GRACE_SECONDS (900: how long a node must be gone before its
blocks are released; Calico's LeakGracePeriod), VPCNET_IPAM_NODE_TTL_SECONDS (15: the node record's
lease), VPCNET_ROUTE_RESYNC_SECONDS (60), VPCNET_SOURCE_DEST_CHECK (false: leave it alone when true).
With no IPPool in the datastore, the first agent creates one as calico-node does, from CALICO_IPV4POOL_CIDR
(10.244.0.0/16), CALICO_IPV4POOL_BLOCK_SIZE (26), CALICO_IPV4POOL_VXLAN (CrossSubnet), CALICO_IPV4POOL_IPIP
(Never) and CALICO_IPV4POOL_NAT_OUTGOING (true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from typing import Any

from vpcnet.agent.context import AgentContext
from vpcnet.agent.http import Response
from vpcnet.agent.pool_routes import PoolRouteSync
from vpcnet.cloud.node import NodeInfo
from vpcnet.dataplane.poolroutes import vtep_mac
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolgc import cleanup_gone_nodes
from vpcnet.ipam.poolnodes import NodeRegistration

log = logging.getLogger(__name__)
UPLINK = "eth0"
DEFAULT_POOL_NAME = "default-ipv4-ippool"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:  # nan would compare false everywhere, inf never expire
        raise ValueError(f"{name}={raw!r}: must be a finite number of seconds, 0 or more")
    return value


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
    # The EC2 protocol of vpcnet.cloud has no call for this yet; its generic throttled, retrying call does it.
    await ec2._call(
        "ModifyNetworkInterfaceAttribute",
        NetworkInterfaceId=node.primary_eni_id,
        SourceDestCheck={"Value": False},
    )
    log.info("source/dest check off on %s (pod addresses come from the pool)", node.primary_eni_id)


def default_pool_document(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The pool calico-node creates when there is none, from the same environment variables."""
    source = os.environ if env is None else env

    def get(name: str, default: str) -> str:
        return source.get(name, "").strip() or default

    block = get("CALICO_IPV4POOL_BLOCK_SIZE", "26")
    if not block.isdigit():
        raise ValueError(f"CALICO_IPV4POOL_BLOCK_SIZE={block!r}: expected a number")
    nat = get("CALICO_IPV4POOL_NAT_OUTGOING", "true").lower()
    if nat not in ("true", "false"):
        raise ValueError(f"CALICO_IPV4POOL_NAT_OUTGOING={nat!r}: expected true or false")
    document = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": DEFAULT_POOL_NAME},
        "spec": {
            "cidr": get("CALICO_IPV4POOL_CIDR", "10.244.0.0/16"),
            "blockSize": int(block),
            # This kernel family has VXLAN but often no ipip module: VXLAN across subnets by default.
            "vxlanMode": get("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
            "ipipMode": get("CALICO_IPV4POOL_IPIP", "Never"),
            "natOutgoing": nat == "true",
        },
    }
    from vpcnet.api.loader import parse_resource

    parse_resource(document, "the default IPPool (CALICO_IPV4POOL_* environment)")  # raises naming the field
    return document


async def ensure_default_pool(datastore: Any) -> bool:
    """Create the default pool when no IPPool exists (first agent wins); True when this one created it."""
    from vpcnet.datastore.resources import ResourceRef, ResourceStore
    from vpcnet.ipam.poolstore import IPPOOL_KIND

    pools, _ = await ResourceStore(datastore).list(IPPOOL_KIND)
    if pools:
        return False
    document = default_pool_document()
    key = ResourceRef(IPPOOL_KIND, None, DEFAULT_POOL_NAME).key
    created = await datastore.create(
        key, json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    )
    if created is not None:
        log.info("created the default IPPool %s", document["spec"])
    return created is not None


async def warn_if_ipip_unsupported(datastore: Any) -> None:
    """Say at start, once and plainly, that IP-in-IP pools cannot work on this kernel."""
    from vpcnet.datastore.resources import ResourceStore
    from vpcnet.ipam.poolstore import read_pool_config

    if os.path.isdir("/sys/module/ipip"):
        return
    config = await read_pool_config(ResourceStore(datastore))
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
        self.datastore: Any = None
        self.registration: NodeRegistration | None = None
        self.routes: PoolRouteSync | None = None
        self.allocator: PoolAllocator | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.grace = _env_float("VPCNET_IPAM_NODE_GRACE_SECONDS", 900.0)
        self.ttl = max(5, int(_env_float("VPCNET_IPAM_NODE_TTL_SECONDS", 15.0)))
        self.resync = max(1.0, _env_float("VPCNET_ROUTE_RESYNC_SECONDS", 60.0))
        self.keep_sdc = os.environ.get("VPCNET_SOURCE_DEST_CHECK", "false").lower() in ("1", "true", "yes")
        self.cleanups = 0

    async def start(self) -> None:
        from vpcnet.cloud.imds import Imds
        from vpcnet.datastore.etcd import EtcdDatastore

        cfg = self.ctx.config
        node = await Imds(cfg.imds_endpoint).node_info()
        name = cfg.node_name or node.instance_id
        self.datastore = EtcdDatastore(cfg.etcd_settings())
        labels = node_labels(name, node)
        record = NodeRecord(
            name, node.primary_ip, node.subnet_cidr, vtep_mac(name), node.availability_zone, labels
        )
        if not self.keep_sdc:
            await disable_source_dest_check(self.ctx, node)
        await ensure_default_pool(self.datastore)
        await warn_if_ipip_unsupported(self.datastore)
        self.registration = NodeRegistration(self.datastore, record, self.ttl)
        await self.registration.start()
        self.allocator = PoolAllocator(PoolIpam(self.datastore, name, labels))
        from vpcnet.dataplane.poolroutes_apply import link_mtu

        mtu = await link_mtu(UPLINK)  # the VXLAN device gets this less its 50 bytes of headers
        self.routes = PoolRouteSync(
            self.datastore, record, uplink=UPLINK, uplink_mtu=mtu, resync_interval=self.resync
        )
        self.ctx.node = node
        self.ctx.allocator = self.allocator
        self.ctx.shared["pool_ipam"] = self
        self.ctx.introspection.route("/v1/pool-ipam", self._introspect)
        self._tasks = [
            asyncio.create_task(self.routes.run(), name="pool-routes"),
            asyncio.create_task(self._cleanup_loop(), name="pool-cleanup"),
        ]
        # Serve once the routes reflect the datastore (a pod started before would be unreachable).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.routes.synced.wait(), 30)
        self.allocator.set_ready()

    async def _cleanup_loop(self) -> None:
        period = max(5.0, min(60.0, self.grace / 2 or 5.0))
        while True:
            await asyncio.sleep(period)
            try:
                done = await cleanup_gone_nodes(self.datastore, self.grace)
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
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        if self.registration is not None:
            # Not withdrawn: an agent restart must not make every node drop its routes to us. The lease
            # runs out by itself if we do not come back.
            with contextlib.suppress(Exception):
                await self.registration.stop(withdraw=False)
            self.registration = None
        if self.datastore is not None:
            with contextlib.suppress(Exception):
                await self.datastore.close()
            self.datastore = None

    def ready(self) -> bool:
        return self.allocator is not None and self.allocator.ready()


def make_component(ctx: AgentContext) -> PoolIpamComponent:
    return PoolIpamComponent(ctx)
