"""Which policy planes a node runs, by its pods' family.

IPv4 pods: one IPv4 plane. Calico mode: a plane per family of the pods (calico_planes). VPC mode's IPv6 pods
(ENABLE_IPv6, the VPC CNI's IPv6 mode): an IPv6 plane for the pods' own addresses, and an IPv4 plane for
their egress-only IPv4 (each pod has a node-local address from 169.254.172.0/22 that the node SNATs to its
primary IPv4): policy with IPv4 ipBlocks holds for that traffic too, and a pod may send IPv4 from its own
such address only. That address is no pod IP: the plane learns a pod's from the allocator, by the IPv6
address the pod's status names.
"""

from __future__ import annotations

from ipaddress import ip_address

from vpcnet.agent.component import Component
from vpcnet.agent.config import Mode
from vpcnet.agent.context import AgentContext
from vpcnet.agent.policy import Plane, PolicyComponent
from vpcnet.api.core import Pod
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_calc import LocalAddresses
from vpcnet.ipam.ipv6 import Ipv6Allocator


def make_component(ctx: AgentContext) -> Component:
    return PolicyComponent(ctx, planes_for(ctx))


def planes_for(ctx: AgentContext) -> tuple[Plane, ...]:
    cfg = ctx.config
    if cfg.mode is Mode.CALICO:
        return calico_planes(cfg.enable_ipv4, cfg.enable_ipv6)
    if cfg.enable_ipv6:
        return (Plane(IpFamily.V6), Plane(IpFamily.V4, egress_v4_addresses(ctx)))
    return (Plane(IpFamily.V4),)


def calico_planes(ipv4: bool, ipv6: bool) -> tuple[Plane, ...]:
    """Calico mode: a plane per family of the pods, each over the pods' own addresses of that family (a
    dual-stack pod is an endpoint of both). IPv6-only pods still get an IPv4 plane, with no local addresses:
    its fail-closed dispatch drops any IPv4 a pod sends, as no pod has an IPv4 address to send from."""
    if ipv4:
        return (Plane(IpFamily.V4), Plane(IpFamily.V6)) if ipv6 else (Plane(IpFamily.V4),)
    return (Plane(IpFamily.V6), Plane(IpFamily.V4, _no_addresses))


def _no_addresses(pod: Pod) -> tuple[str, ...]:
    return ()


def egress_v4_addresses(ctx: AgentContext) -> LocalAddresses:
    """A local IPv6 pod's node-local IPv4, from the allocator (started before the policy component)."""

    def addresses(pod: Pod) -> tuple[str, ...]:
        allocator = ctx.allocator
        if not isinstance(allocator, Ipv6Allocator):
            raise TypeError(f"IPv6 pods need the IPv6 allocator, not {type(allocator).__name__}")
        found = (allocator.egress_v4_of(ip_address(ip)) for ip in pod.pod_ips if ":" in ip)
        return tuple(str(a) for a in found if a is not None)

    return addresses
