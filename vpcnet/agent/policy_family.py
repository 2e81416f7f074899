"""Which policy planes a node runs, by its pods' family.

IPv4 pods: one IPv4 plane. IPv6 pods (ENABLE_IPv6, the VPC CNI's IPv6 mode): an IPv6 plane for the pods'
own addresses, and an IPv4 plane for their egress-only IPv4 (each pod has a node-local address from
169.254.172.0/22 that the node SNATs to its primary IPv4): policy with IPv4 ipBlocks holds for that traffic
too, and a pod may send IPv4 from its own such address only. That address is no pod IP: the plane learns a
pod's from the allocator, by the IPv6 address the pod's status names.
"""

from __future__ import annotations

from ipaddress import ip_address

from vpcnet.agent.component import Component
from vpcnet.agent.context import AgentContext
from vpcnet.agent.policy import Plane, PolicyComponent
from vpcnet.api.core import Pod
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_calc import LocalAddresses
from vpcnet.ipam.ipv6 import Ipv6Allocator


def make_component(ctx: AgentContext) -> Component:
    return PolicyComponent(ctx, planes_for(ctx))


def planes_for(ctx: AgentContext) -> tuple[Plane, ...]:
    if ctx.config.enable_ipv6:
        return (Plane(IpFamily.V6), Plane(IpFamily.V4, egress_v4_addresses(ctx)))
    return (Plane(IpFamily.V4),)


def egress_v4_addresses(ctx: AgentContext) -> LocalAddresses:
    """A local IPv6 pod's node-local IPv4, from the allocator (started before the policy component)."""

    def addresses(pod: Pod) -> tuple[str, ...]:
        allocator = ctx.allocator
        if not isinstance(allocator, Ipv6Allocator):
            raise TypeError(f"IPv6 pods need the IPv6 allocator, not {type(allocator).__name__}")
        found = (allocator.egress_v4_of(ip_address(ip)) for ip in pod.pod_ips if ":" in ip)
        return tuple(str(a) for a in found if a is not None)

    return addresses
