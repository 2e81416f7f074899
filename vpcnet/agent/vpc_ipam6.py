"""The ipam component in VPC mode with ENABLE_IPv6: IMDS -> node, the EC2 client, the Ipv6Allocator.

No warm pool, no ENI networking, no pool metrics: one /80 on the primary ENI serves every pod
(vpcnet.ipam.ipv6). Sets ctx.node and ctx.allocator; /v1/ipam and /v1/enis show the prefix and who holds
which address.
"""

from __future__ import annotations

import json
import logging
from ipaddress import IPv6Network

from vpcnet.agent.context import AgentContext
from vpcnet.agent.http import Response
from vpcnet.agent.ipam_metrics import ApiMetrics
from vpcnet.cloud.boto_ec2 import Boto3Ec2
from vpcnet.cloud.imds import Imds
from vpcnet.cloud.throttle import Backoff
from vpcnet.ipam.ipv6 import Ipv6Allocator

log = logging.getLogger("vpcnet.agent.ipam")


class Ipv6IpamComponent:
    name = "ipam"

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.allocator: Ipv6Allocator | None = None

    def ready(self) -> bool:
        return self.allocator is not None and self.allocator.ready()

    async def start(self) -> None:
        from vpcnet.dataplane.podnet import VethPodExistence
        from vpcnet.ipam.checkpoint import FileCheckpoint

        cfg = self.ctx.config
        imds = Imds(cfg.imds_endpoint)
        node = await imds.node_info()
        self.ctx.node = node
        ec2 = Boto3Ec2(
            cfg.region or node.region,
            endpoint_url=cfg.ec2_endpoint,
            rate_limit=cfg.ec2_rate_limit,
            backoff=Backoff(max_attempts=cfg.ec2_max_attempts),
            observer=ApiMetrics(self.ctx.metrics).observe,
        )

        async def prefixes() -> list[IPv6Network]:
            return await imds.ipv6_prefixes(node.primary_mac)

        self.allocator = Ipv6Allocator(
            ec2=ec2,
            node=node,
            checkpoint=FileCheckpoint(cfg.checkpoint_path),
            pods=self.ctx.pod_existence or VethPodExistence(cfg.veth_prefix),
            imds_prefixes=prefixes,
        )
        await self.allocator.start()
        self.ctx.allocator = self.allocator
        self.ctx.introspection.route("/v1/ipam", self._ipam)
        self.ctx.introspection.route("/v1/enis", self._ipam)
        log.info(
            "ipam started (IPv6 pods)",
            extra={
                "instance": node.instance_id,
                "prefix": str(self.allocator.prefix),
                "assigned_prefix": self.allocator.assigned_prefix,
            },
        )

    async def stop(self) -> None:
        if self.allocator is not None:
            await self.allocator.stop()

    async def _ipam(self, query: str) -> Response:
        assert self.allocator is not None
        return 200, "application/json", json.dumps(self.allocator.describe(), indent=1).encode()
