"""The lab's topology as data: a VPC, its subnets per availability zone and its nodes.

Pure: nothing here touches the kernel or the cloud. `lab up` turns a LabTopology into namespaces and
EC2 objects (mininet's Topo vs Mininet split), and the unit tests check the carving without root.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from vpcnet.lab.layout import EC2_ENDPOINT_ADDRESS, ETCD_ENDPOINT_ADDRESS, INTERNET_CIDR, KUBEAPI_ADDRESS

DEFAULT_VPC_CIDR = "10.0.0.0/16"
# The VPC's IPv6 /56 stands for an Amazon-provided block (EC2 hands out global unicast from its own ranges,
# e.g. 2600:1f14::/32). The lab takes it from the documentation range 2001:db8::/32 (RFC 3849): it is never
# routed anywhere, so nothing the lab sends can reach or shadow a real host even if it leaked, and it keeps
# clear of this machine's own fd00::/64; the lab's IPv4 internet uses TEST-NET-2 for the same reason.
DEFAULT_VPC_IPV6_CIDR = "2001:db8:1f14:8c00::/56"
IP_FAMILIES = ("ipv4", "ipv6", "dual")
DEFAULT_REGION = "us-east-1"
DEFAULT_INSTANCE_TYPE = "t3.medium"
DEFAULT_NODES = 3
DEFAULT_AZS = 2
SUBNET_PREFIX_LEN = 20  # 4,091 usable addresses per subnet, as EKS guides suggest for node subnets
MAX_AZS = 6  # us-east-1 has six zones (a-f)
MAX_NODES = 64


class TopologyError(ValueError):
    """The topology asked for cannot be built; the message names the parameter."""


@dataclass(frozen=True)
class SubnetSpec:
    name: str  # e.g. "node-us-east-1a"
    cidr: str
    az: str
    role: str  # "node" (nodes' primary ENIs) or "pod" (custom networking)
    ipv6_cidr: str = ""  # a /64 of the VPC's /56 when the lab has IPv6

    @property
    def gateway(self) -> str:
        """The VPC router's address in the subnet: the first host, as on EC2 (base + 1)."""
        return str(ipaddress.ip_network(self.cidr).network_address + 1)

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen


@dataclass(frozen=True)
class NodeSpec:
    name: str  # e.g. "node1"; the namespace is layout.node_netns(name)
    az: str
    subnet: str  # SubnetSpec.name of its node subnet
    instance_type: str


@dataclass(frozen=True)
class LabTopology:
    vpc_cidr: str
    region: str
    subnets: tuple[SubnetSpec, ...]
    nodes: tuple[NodeSpec, ...]
    ip_family: str = "ipv4"  # ipv4 | ipv6 | dual: which families the VPC (and the pods) have
    vpc_ipv6_cidr: str = ""

    @property
    def azs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.az for s in self.subnets))

    def subnet(self, name: str) -> SubnetSpec:
        for s in self.subnets:
            if s.name == name:
                return s
        raise KeyError(name)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def node_subnet(self, az: str) -> SubnetSpec:
        return next(s for s in self.subnets if s.az == az and s.role == "node")

    def pod_subnet(self, az: str) -> SubnetSpec | None:
        return next((s for s in self.subnets if s.az == az and s.role == "pod"), None)


def az_names(region: str, count: int) -> list[str]:
    return [f"{region}{chr(ord('a') + i)}" for i in range(count)]


def build_topology(
    *,
    nodes: int = DEFAULT_NODES,
    azs: int = DEFAULT_AZS,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    vpc_cidr: str = DEFAULT_VPC_CIDR,
    region: str = DEFAULT_REGION,
    pod_subnets: int = 0,
    ip_family: str = "ipv4",
) -> LabTopology:
    """Carve the VPC into /20s: one node subnet per AZ first, then `pod_subnets` pod subnets per AZ for
    custom networking (True counts as one; a second lets ENIConfigs move a node between two subnets of its
    zone). Nodes go round-robin over the AZs: node1 in the first AZ, node2 in the second..."""
    if not 1 <= nodes <= MAX_NODES:
        raise TopologyError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if not 1 <= azs <= MAX_AZS:
        raise TopologyError(f"--azs must be between 1 and {MAX_AZS}, got {azs}")
    if not instance_type or "." not in instance_type:
        raise TopologyError(f"--instance-type {instance_type!r} is not an EC2 instance type (like t3.medium)")
    try:
        vpc = ipaddress.IPv4Network(vpc_cidr)
    except ValueError as e:
        raise TopologyError(f"VPC CIDR {vpc_cidr!r} is not an IPv4 network: {e}") from None
    if not 16 <= vpc.prefixlen <= SUBNET_PREFIX_LEN:
        raise TopologyError(f"VPC CIDR {vpc_cidr} must be between /16 and /{SUBNET_PREFIX_LEN}")
    if not vpc.is_private:
        raise TopologyError(f"VPC CIDR {vpc_cidr} must be a private (RFC 1918) range")
    if vpc.overlaps(ipaddress.IPv4Network(INTERNET_CIDR)):
        raise TopologyError(f"VPC CIDR {vpc_cidr} overlaps the lab's internet {INTERNET_CIDR}")

    if ip_family not in IP_FAMILIES:
        raise TopologyError(f"--ip-family must be one of {', '.join(IP_FAMILIES)}, got {ip_family!r}")
    if not 0 <= int(pod_subnets) <= 2:
        raise TopologyError(f"pod subnets per AZ must be 0, 1 or 2, got {pod_subnets}")
    zones = az_names(region, azs)
    wanted = len(zones) * (1 + int(pod_subnets))
    blocks = list(vpc.subnets(new_prefix=SUBNET_PREFIX_LEN))
    # The control-plane endpoints sit at the top of the default VPC; keep subnets off them.
    reserved = [
        ipaddress.IPv4Address(a) for a in (EC2_ENDPOINT_ADDRESS, ETCD_ENDPOINT_ADDRESS, KUBEAPI_ADDRESS)
    ]
    blocks = [b for b in blocks if not any(a in b for a in reserved)]
    if len(blocks) < wanted:
        raise TopologyError(
            f"VPC CIDR {vpc_cidr} has room for {len(blocks)} /{SUBNET_PREFIX_LEN} subnets, "
            f"{wanted} are needed ({azs} AZs{' with pod subnets' if pod_subnets else ''})"
        )
    subnets = [SubnetSpec(f"node-{az}", str(blocks[i]), az, "node") for i, az in enumerate(zones)]
    for k in range(int(pod_subnets)):  # pod-<az>, then pod2-<az>
        base = len(zones) * (k + 1)
        subnets += [
            SubnetSpec(f"pod{k + 1 if k else ''}-{az}", str(blocks[base + i]), az, "pod")
            for i, az in enumerate(zones)
        ]
    vpc6 = DEFAULT_VPC_IPV6_CIDR if ip_family != "ipv4" else ""
    if vpc6:  # subnet i takes the /64 numbered i + 1 of the /56 (EC2 lets the owner pick the number)
        blocks6 = list(ipaddress.IPv6Network(vpc6).subnets(new_prefix=64))
        subnets = [replace(s, ipv6_cidr=str(blocks6[i + 1])) for i, s in enumerate(subnets)]
    node_specs = tuple(
        NodeSpec(f"node{i + 1}", zones[i % len(zones)], f"node-{zones[i % len(zones)]}", instance_type)
        for i in range(nodes)
    )
    return LabTopology(
        vpc_cidr=str(vpc),
        region=region,
        subnets=tuple(subnets),
        nodes=node_specs,
        ip_family=ip_family,
        vpc_ipv6_cidr=vpc6,
    )
