"""The ipam component in VPC mode: IMDS -> node, limits, EC2 client, ENI networking, the VpcAllocator.

Sets ctx.node and ctx.allocator, adds its metrics and introspection paths (/v1/enis, /v1/ipam,
/v1/eni-configs). The same code runs on EC2 and in the lab: only the endpoint URLs differ.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vpcnet.agent.config import AgentConfig, ConfigError
from vpcnet.agent.context import AgentContext
from vpcnet.agent.eniconfig import EniConfigWatch, load_eni_config
from vpcnet.agent.http import Response
from vpcnet.agent.ipam_metrics import ApiMetrics, PoolCollector
from vpcnet.agent.vpc_ipam6 import Ipv6IpamComponent
from vpcnet.cloud.boto_ec2 import Boto3Ec2
from vpcnet.cloud.ec2 import Ec2Api, Ec2Error, InstanceTypeInfo
from vpcnet.cloud.imds import Imds
from vpcnet.cloud.throttle import Backoff
from vpcnet.ipam.eni_target import EniTarget, EniTargets
from vpcnet.ipam.limits import InstanceLimits, UnknownInstanceType, instance_limits
from vpcnet.ipam.maxpods import max_pods
from vpcnet.ipam.vpc import VpcAllocator, VpcSettings, capacity_for
from vpcnet.ipam.warm import WarmTargets

log = logging.getLogger("vpcnet.agent.ipam")


def make_component(ctx: AgentContext) -> VpcIpamComponent | Ipv6IpamComponent:
    if ctx.config.enable_ipv6:  # the VPC CNI's IPv6 mode: one /80, no warm pool
        return Ipv6IpamComponent(ctx)
    return VpcIpamComponent(ctx)


class VpcIpamComponent:
    name = "ipam"

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.allocator: VpcAllocator | None = None
        self._closers: list[Any] = []
        self.eni_config: dict[str, Any] | None = None  # file mode: the ENIConfig read at start
        self.eni_watch: EniConfigWatch | None = None  # datastore mode: the node's ENIConfig, followed

    def ready(self) -> bool:
        return self.allocator is not None and self.allocator.ready()

    async def start(self) -> None:
        from vpcnet.dataplane.podnet import VethPodExistence
        from vpcnet.dataplane.secondary_enis import KernelEniNetworking
        from vpcnet.ipam.checkpoint import FileCheckpoint

        cfg = self.ctx.config
        node = await Imds(cfg.imds_endpoint).node_info()
        self.ctx.node = node
        api_metrics = ApiMetrics(self.ctx.metrics)
        ec2 = Boto3Ec2(
            cfg.region or node.region,
            endpoint_url=cfg.ec2_endpoint,
            rate_limit=cfg.ec2_rate_limit,
            backoff=Backoff(max_attempts=cfg.ec2_max_attempts),
            observer=api_metrics.observe,
        )
        limits = await instance_type_limits(ec2, node.instance_type, cfg.checkpoint_path.parent)
        if cfg.enable_prefix_delegation and not limits.is_nitro:
            raise ConfigError(
                f"ENABLE_PREFIX_DELEGATION=true: {node.instance_type} is not a Nitro instance type,"
                " so EC2 cannot assign /28 prefixes to it"
            )
        targets = EniTargets(custom_networking=cfg.custom_network_cfg)
        if cfg.custom_network_cfg and cfg.eni_config_file is None:
            self.eni_watch = EniConfigWatch(cfg, targets)
            await self.eni_watch.start()  # before the pool: its first ENI goes where the ENIConfig says
        elif cfg.custom_network_cfg:
            self.eni_config = load_eni_config(cfg, node)
            targets.use(
                EniTarget(
                    str(self.eni_config["subnet"]),
                    tuple(self.eni_config.get("securityGroups", ())),
                    f"ENIConfig {self.eni_config['name']} ({cfg.eni_config_file})",
                )
            )
        pods_max = cfg.max_pods or max_pods(
            limits,
            prefix_delegation=cfg.enable_prefix_delegation,
            custom_networking=cfg.custom_network_cfg,
            max_eni=cfg.max_eni,
        )
        capacity = capacity_for(
            instance_type=node.instance_type,
            type_max_enis=limits.enis_on_default_card,
            ipv4_per_eni=limits.ipv4_per_eni,
            max_pods=pods_max,
            prefix_delegation=cfg.enable_prefix_delegation,
            custom_networking=cfg.custom_network_cfg,
            max_eni=cfg.max_eni,
        )
        settings = vpc_settings(cfg)
        networking = KernelEniNetworking()
        self._closers.append(networking)
        pods = self.ctx.pod_existence or VethPodExistence(cfg.veth_prefix)
        self.allocator = VpcAllocator(
            ec2=ec2,
            node=node,
            capacity=capacity,
            settings=settings,
            networking=networking,
            checkpoint=FileCheckpoint(cfg.checkpoint_path),
            pods=pods,
            eni_targets=targets,
        )
        await self.allocator.start()
        self.ctx.allocator = self.allocator
        self.ctx.metrics.register(PoolCollector(self.allocator))
        self.ctx.introspection.route("/v1/enis", self._enis)
        self.ctx.introspection.route("/v1/ipam", self._ipam)
        self.ctx.introspection.route("/v1/eni-configs", self._eni_configs)
        self.ctx.introspection.route("/v1/networkutils-env-settings", self._netutils)
        log.info(
            "ipam started",
            extra={
                "instance": node.instance_id,
                "type": node.instance_type,
                "max_enis": capacity.max_enis,
                "slots_per_eni": capacity.slots_per_eni,
                "max_pods": capacity.max_pods,
                "prefix_delegation": cfg.enable_prefix_delegation,
                "warm_mode": cfg.warm_mode.value,
            },
        )

    async def stop(self) -> None:
        if self.allocator is not None:
            await self.allocator.stop()
        if self.eni_watch is not None:
            await self.eni_watch.stop()
        for c in self._closers:
            c.close()
        self._closers.clear()

    async def _enis(self, query: str) -> Response:
        assert self.allocator is not None
        d = self.allocator.describe()
        # the VPC CNI's shape: network card -> {TotalIPs, AssignedIPs, ENIs}
        doc = {"0": {"TotalIPs": d["totalIPs"], "AssignedIPs": d["assignedIPs"], "ENIs": d["ENIs"]}}
        return 200, "application/json", json.dumps(doc, indent=1).encode()

    async def _ipam(self, query: str) -> Response:
        assert self.allocator is not None
        return 200, "application/json", json.dumps(self.allocator.describe(), indent=1).encode()

    async def _netutils(self, query: str) -> Response:
        cfg = self.ctx.config
        doc = {
            "AWS_VPC_K8S_CNI_EXTERNALSNAT": cfg.external_snat,
            "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": [str(c) for c in cfg.exclude_snat_cidrs],
            "AWS_VPC_K8S_CNI_VETHPREFIX": cfg.veth_prefix,
            "AWS_VPC_ENI_MTU": cfg.eni_mtu,
            "VPC_CIDRS": [str(c) for c in self.ctx.node.vpc_cidrs],
        }
        return 200, "application/json", json.dumps(doc, indent=1).encode()

    async def _eni_configs(self, query: str) -> Response:
        doc = self.eni_watch.status() if self.eni_watch is not None else self.eni_config or {}
        return 200, "application/json", json.dumps(doc, indent=1).encode()


def vpc_settings(cfg: AgentConfig) -> VpcSettings:
    return VpcSettings(
        targets=WarmTargets(
            warm_eni=cfg.warm_eni_target,
            warm_ip=cfg.warm_ip_target,
            minimum_ip=cfg.minimum_ip_target,
            warm_prefix=cfg.warm_prefix_target,
            adaptive=cfg.warm_mode.value == "adaptive",
        ),
        cooldown=cfg.ip_cooldown_period,
        mtu=cfg.eni_mtu,
        release_delay=cfg.release_delay,
        pool_interval=cfg.pool_interval,
        reconcile_interval=cfg.reconcile_interval,
        leaked_eni_grace=cfg.leaked_eni_grace,
        assign_wait=cfg.assign_wait,
        adaptive_window=cfg.adaptive_window,
        cluster_name=cfg.cluster_name,
    )


async def instance_type_limits(ec2: Ec2Api, instance_type: str, cache_dir: Path) -> InstanceLimits:
    """From EC2 (cached in cache_dir), else the bundled table."""
    cache = cache_dir / "instance-types.json"
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = {}
    row = cached.get(instance_type)
    if row is None:
        try:
            info = await ec2.describe_instance_type(instance_type)
            row = asdict(info)
            cached[instance_type] = row
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(cached, indent=1))
            except OSError as exc:
                log.warning("could not cache instance-type limits", extra={"error": str(exc)})
        except Ec2Error as exc:
            log.warning("DescribeInstanceTypes failed; using the bundled table", extra={"error": str(exc)})
    if row is not None:
        info = InstanceTypeInfo(**{**row, "enis_per_card": tuple(row.get("enis_per_card", ()))})
        return InstanceLimits(
            name=info.name,
            vcpus=info.vcpus,
            hypervisor=info.hypervisor,
            bare_metal=info.bare_metal,
            max_enis=info.max_enis,
            ipv4_per_eni=info.ipv4_per_eni,
            default_card=0,
            enis_per_card=info.enis_per_card,
        )
    try:
        return instance_limits(instance_type)
    except UnknownInstanceType as exc:
        raise ConfigError(
            f"instance type {instance_type!r} is unknown to EC2 and to the bundled table"
        ) from exc
