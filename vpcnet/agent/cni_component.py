"""The agent's CNI component: vpcnet.cni's service built from the agent's context."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from urllib.parse import urlsplit

from vpcnet.agent.branch_lookup import StoreBranchLookup
from vpcnet.agent.config import Mode
from vpcnet.agent.context import AgentContext
from vpcnet.cni.handlers import CniSettings
from vpcnet.cni.service import CniService
from vpcnet.dataplane.hostnet import HostNetConfig
from vpcnet.dataplane.podfence import IMDS_ADDRESS, IMDS_ADDRESS6, PodFence, resolve_endpoints
from vpcnet.datastore.settings import parse_endpoint
from vpcnet.ipam.ipv6 import EGRESS_V4_CIDR

PRIMARY_INTERFACE = "eth0"


def make_component(ctx: AgentContext) -> CniService:
    cfg = ctx.config

    def host() -> HostNetConfig:
        node = ctx.node  # set by the ipam component's start(), which runs first
        return HostNetConfig(
            primary_ip=node.primary_ip,
            vpc_cidrs=node.vpc_cidrs,
            excluded_snat_cidrs=cfg.exclude_snat_cidrs,
            external_snat=cfg.external_snat,
            primary_interface=PRIMARY_INTERFACE,
            veth_prefix=cfg.veth_prefix,
            ipv6_egress_v4=EGRESS_V4_CIDR if cfg.enable_ipv6 else None,
        )

    def fence() -> PodFence:
        # The etcd endpoints the node is given, whichever datastore the agent reads (a lab on the Kubernetes
        # datastore keeps its etcd behind the API); the API server itself is RBAC's to guard.
        etcd = [parse_endpoint(e) for e in cfg.datastore_endpoints]
        imds = urlsplit(cfg.imds_endpoint)
        # IMDS where the node is told it is, in its family; the other family's at its well-known address
        imds_addresses = [a for a, _ in resolve_endpoints([(imds.hostname or "", imds.port or 80)])]
        v4 = [a for a in imds_addresses if isinstance(a, IPv4Address)]
        v6 = [a for a in imds_addresses if isinstance(a, IPv6Address)]
        return PodFence(
            veth_prefix=cfg.veth_prefix,
            datastore=resolve_endpoints([(e.host, e.port) for e in etcd]),
            block_imds=cfg.block_imds,
            imds_address=v4[0] if v4 else IMDS_ADDRESS,
            ipv6=cfg.enable_ipv6,  # IPv6 pods (VPC mode's ENABLE_IPv6, or Calico's IPv6 pool)
            imds_address6=v6[0] if v6 else IMDS_ADDRESS6,
        )

    service = CniService(
        cfg.agent_socket,
        lambda: ctx.allocator,
        CniSettings(veth_prefix=cfg.veth_prefix, mtu=cfg.eni_mtu),
        # Calico mode has its own outgoing NAT (the pool's natOutgoing); the VPC SNAT chain is VPC mode's.
        host=host if cfg.mode == Mode.VPC else None,
        # STATUS says "not available" while policy programming fails (ctx.policy is set by its start()).
        policy_problem=lambda: ctx.policy.programming_problem() if ctx.policy is not None else None,
        fence=fence,
    )
    if cfg.enable_pod_eni:
        lookup = StoreBranchLookup(
            lambda: ctx.policy.store if ctx.policy is not None else None, cfg.node_name
        )
        service.enable_branches(lookup, cfg.pod_sg_enforcing_mode, cfg.veth_prefix, cfg.eni_mtu)
        service.on_start(lookup.ask_for_trunk)
    ctx.cni = service
    return service
