"""Would the VPC's security groups pass a new flow between two addresses? Pure: ENIs and groups in, a verdict
out.

The same semantics the fabric enforces (vpcnet/lab/sgfabric.py): a new flow passes when a rule of one of the
sending ENI's groups allows it out (egress, peer: the destination) and a rule of one of the receiving ENI's
groups allows it in (ingress, peer: the source). Stateful, so only the first packet's direction is asked. A
rule's peer is a CIDR or a group; a group stands for its members' addresses (every private address and prefix
of every ENI that carries it).

Which flows cross the VPC: an address no ENI holds has no groups on that end (a Calico pool's, an outside
host's), and an address's traffic to itself has none. Two addresses of the same instance's ENIs meet on the
node and never reach the VPC, unless one is a branch ENI's in the strict enforcing mode (everything a strict
pod sends or receives crosses the VPC); in the standard mode a branch pod and its own node meet on the node
(every pod's `to <ip> lookup main` rule at 512 comes before the `from <ip>` one), so a branch counts as its
trunk's instance.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpcnet.lab.ec2.model import SgRule

# The probe's protocol names as EC2 writes them in a rule.
EC2_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "132", "ICMP": "icmp"}


@dataclass(frozen=True)
class SgEni:
    """What the verdict needs of an ENI."""

    id: str
    instance: str  # the instance it is attached to (a branch: its trunk's); "" when detached
    branch: bool
    addresses: tuple[str, ...]
    prefixes: tuple[str, ...]
    groups: tuple[str, ...]

    def holds(self, ip: str) -> bool:
        if ip in self.addresses:
            return True
        address = ipaddress.ip_address(ip)
        return any(address in ipaddress.ip_network(p) for p in self.prefixes)


@dataclass(frozen=True)
class SgGroup:
    id: str
    name: str
    rules: tuple[SgRule, ...]


@dataclass(frozen=True)
class SgVerdict:
    allowed: bool
    reason: str  # why, in words; "" when the flow does not cross the VPC


@dataclass(frozen=True)
class SgFlow:
    src: str
    dst: str
    protocol: str  # as EC2 writes it: "tcp", "udp", "icmp" or a number
    port: int | None = None  # tcp/udp destination port; icmp type


def eni_of(enis: Iterable[SgEni], ip: str) -> SgEni | None:
    return next((e for e in enis if e.holds(ip)), None)


def _members(enis: Iterable[SgEni], group_id: str) -> list[str]:
    out: list[str] = []
    for eni in enis:
        if group_id in eni.groups:
            out += [*eni.addresses, *eni.prefixes]
    return out


def rule_matches(rule: SgRule, flow: SgFlow, peer: str, enis: Sequence[SgEni]) -> bool:
    """Does `rule` allow `flow` whose other end (destination for egress, source for ingress) is `peer`?"""
    if rule.protocol not in ("-1", flow.protocol):
        return False
    if rule.protocol in ("tcp", "udp"):
        if flow.port is None or not rule.from_port <= flow.port <= rule.to_port:
            return False
    elif rule.protocol == "icmp" and rule.from_port != -1 and rule.from_port != flow.port:
        return False
    address = ipaddress.ip_address(peer)
    if not (rule.cidr or rule.group_id):
        return False  # an IPv6 CIDR or a prefix list: the lab's VPC enforces neither
    nets = [rule.cidr] if rule.cidr else _members(enis, rule.group_id)
    return any(address in ipaddress.ip_network(n, strict=False) for n in nets)


def _side(
    eni: SgEni, egress: bool, flow: SgFlow, groups: Mapping[str, SgGroup], enis: Sequence[SgEni]
) -> str:
    """ "" when a rule of the ENI's groups allows the flow in this direction, else what is missing."""
    peer = flow.dst if egress else flow.src
    for gid in eni.groups:
        group = groups.get(gid)
        if group and any(r.egress == egress and rule_matches(r, flow, peer, enis) for r in group.rules):
            return ""
    named = ", ".join(f"{g} ({groups[g].name})" if g in groups else f"{g} (unknown)" for g in eni.groups)
    port = f"/{flow.port}" if flow.port is not None else ""
    what = f"{flow.protocol.upper()}{port}"
    if egress:
        return (
            f"security group: no egress rule of {named or 'no group'} on {eni.id} allows {what} to {flow.dst}"
        )
    return (
        f"security group: no ingress rule of {named or 'no group'} on {eni.id} allows {what} from {flow.src}"
    )


def sg_verdict(
    enis: Sequence[SgEni], groups: Mapping[str, SgGroup], flow: SgFlow, *, strict: bool = True
) -> SgVerdict:
    """The VPC's verdict on a new flow: the sender's egress first, then the receiver's ingress. `strict`:
    POD_SECURITY_GROUP_ENFORCING_MODE=strict (a branch's traffic crosses the VPC even to its own node)."""
    src, dst = eni_of(enis, flow.src), eni_of(enis, flow.dst)
    if (src is None and dst is None) or flow.src == flow.dst:  # an address to itself stays on its host
        return SgVerdict(True, "")
    crosses = strict and ((src is not None and src.branch) or (dst is not None and dst.branch))
    if src and dst and src.instance and src.instance == dst.instance and not crosses:
        return SgVerdict(True, "")  # meets on the node, never in the VPC
    for eni, egress in ((src, True), (dst, False)):
        if eni is not None:
            missing = _side(eni, egress, flow, groups, enis)
            if missing:
                return SgVerdict(False, missing)
    return SgVerdict(True, "security groups allow")


@dataclass(frozen=True)
class SgView:
    """A VPC's ENIs and groups, and the enforcing mode of its branch pods: what judges any flow in it."""

    enis: tuple[SgEni, ...]
    groups: Mapping[str, SgGroup]
    strict: bool = True

    def verdict(self, flow: SgFlow) -> SgVerdict:
        return sg_verdict(self.enis, self.groups, flow, strict=self.strict)


def ec2_protocol(number: int) -> str:
    """A protocol number as EC2 writes it in a rule."""
    return {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(number, str(number))


def enis_from_ec2(
    interfaces: Iterable[Mapping[str, Any]], associations: Iterable[Mapping[str, Any]] = ()
) -> list[SgEni]:
    """SgEnis from DescribeNetworkInterfaces entries and DescribeTrunkInterfaceAssociations' (which
    instance a branch is on: its trunk's)."""
    interfaces = list(interfaces)
    attached = {
        str(e["NetworkInterfaceId"]): str((e.get("Attachment") or {}).get("InstanceId", ""))
        for e in interfaces
    }
    trunk_of = {str(a["BranchInterfaceId"]): str(a["TrunkInterfaceId"]) for a in associations}
    out = []
    for eni in interfaces:
        eni_id = str(eni["NetworkInterfaceId"])
        out.append(
            SgEni(
                id=eni_id,
                instance=attached[eni_id] or attached.get(trunk_of.get(eni_id, ""), ""),
                branch=eni.get("InterfaceType") == "branch",
                addresses=tuple(str(a["PrivateIpAddress"]) for a in eni.get("PrivateIpAddresses") or []),
                prefixes=tuple(str(p["Ipv4Prefix"]) for p in eni.get("Ipv4Prefixes") or []),
                groups=tuple(str(g["GroupId"]) for g in eni.get("Groups") or []),
            )
        )
    return out


def groups_from_ec2(
    security_groups: Iterable[Mapping[str, Any]], rules: Iterable[Mapping[str, Any]]
) -> dict[str, SgGroup]:
    """SgGroups from DescribeSecurityGroups (names) and DescribeSecurityGroupRules (one rule per entry)."""
    by_group: dict[str, list[SgRule]] = {}
    for r in rules:
        by_group.setdefault(str(r["GroupId"]), []).append(
            SgRule(
                id=str(r.get("SecurityGroupRuleId", "")),
                egress=bool(r["IsEgress"]),
                protocol=str(r["IpProtocol"]),
                from_port=int(r.get("FromPort", -1)),
                to_port=int(r.get("ToPort", -1)),
                cidr=str(r.get("CidrIpv4", "")),
                group_id=str((r.get("ReferencedGroupInfo") or {}).get("GroupId", "")),
            )
        )
    return {
        str(g["GroupId"]): SgGroup(
            str(g["GroupId"]), str(g.get("GroupName", "")), tuple(by_group.get(str(g["GroupId"]), []))
        )
        for g in security_groups
    }
