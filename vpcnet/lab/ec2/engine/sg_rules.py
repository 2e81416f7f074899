"""Security-group rules from EC2's IpPermissions: protocol names and numbers, port and ICMP ranges, CIDR and
group peers, checked as EC2 checks them. Pure: the tables are not touched here.

One IpPermission with n peers (IpRanges and UserIdGroupPairs) is n rules, each with its own sgr- ID, and
each counts against the 60-rules-per-direction limit (as in EC2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Network, NetmaskValueError
from typing import Any

from vpcnet.lab.ec2.errors import Ec2Error, invalid_value

RULES_PER_DIRECTION = 60  # EC2's default: inbound and outbound rules per group, counted apart
GROUPS_PER_ENI = 5  # EC2's default: security groups per network interface
_NAMED = {"-1": "-1", "all": "-1", "tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp"}
_NAMED |= {"icmp": "icmp", "1": "icmp", "icmpv6": "icmpv6", "58": "icmpv6"}
_PORT_PROTOCOLS = ("tcp", "udp")
_ICMP_PROTOCOLS = ("icmp", "icmpv6")


@dataclass(frozen=True)
class RuleSpec:
    """A rule as asked for: what `SgRule.key` compares, plus its description."""

    egress: bool
    protocol: str
    from_port: int
    to_port: int
    cidr: str = ""
    group_id: str = ""
    description: str = ""

    def key(self) -> tuple[bool, str, int, int, str, str]:
        return (self.egress, self.protocol, self.from_port, self.to_port, self.cidr, self.group_id)

    def describe(self) -> str:
        """The rule as EC2's Duplicate/NotFound messages name it."""
        peer = self.cidr or self.group_id
        return f"peer: {peer}, {self.protocol.upper()}, from port: {self.from_port}, to port: {self.to_port}"


def protocol_of(raw: Any) -> str:
    """EC2's canonical protocol: names and their numbers become the name, "all" becomes "-1"."""
    text = str(raw).strip().lower()
    if text in _NAMED:
        return _NAMED[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return str(int(text))
    raise invalid_value(f"Invalid value '{raw}' for IP protocol. Unknown protocol.")


def ports_of(protocol: str, from_port: Any, to_port: Any) -> tuple[int, int]:
    """(from, to) as EC2 stores them; -1/-1 for protocols without ports."""
    if protocol in _PORT_PROTOCOLS:
        if from_port is None or to_port is None:
            raise invalid_value(
                f"Invalid value for portRange. Must specify both from and to ports with TCP/UDP ({protocol})."
            )
        lo, hi = int(from_port), int(to_port)
        if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
            raise invalid_value(f"Invalid value for portRange: {lo}-{hi} (ports are 0 to 65535).")
        if lo > hi:
            raise invalid_value(f"Invalid TCP/UDP port range: from port {lo} is above to port {hi}.")
        return lo, hi
    if protocol in _ICMP_PROTOCOLS:
        icmp_type = -1 if from_port is None else int(from_port)
        code = -1 if to_port is None else int(to_port)
        if not (-1 <= icmp_type <= 255 and -1 <= code <= 255):
            raise invalid_value(f"Invalid ICMP type/code {icmp_type}/{code} (each -1 to 255).")
        if icmp_type == -1 and code != -1:
            raise invalid_value(f"Invalid ICMP code {code}: an ICMP code needs an ICMP type.")
        return icmp_type, code
    return -1, -1


def _cidr(raw: Any) -> str:
    try:
        return str(IPv4Network(str(raw), strict=True))
    except (AddressValueError, NetmaskValueError, ValueError):
        raise invalid_value(f"CIDR block {raw} is malformed") from None


def specs_of(permissions: Sequence[Mapping[str, Any]], egress: bool) -> list[RuleSpec]:
    """The rules an IpPermissions list asks for, in order; bad input raises with EC2's code."""
    if not permissions:
        raise Ec2Error("MissingParameter", "The request must contain the parameter IpPermissions")
    specs: list[RuleSpec] = []
    for perm in permissions:
        if "IpProtocol" not in perm:
            raise Ec2Error("MissingParameter", "The request must contain the parameter IpProtocol")
        protocol = protocol_of(perm["IpProtocol"])
        lo, hi = ports_of(protocol, perm.get("FromPort"), perm.get("ToPort"))
        if perm.get("Ipv6Ranges") or perm.get("PrefixListIds"):
            raise invalid_value(
                "The lab's security groups take IPv4 CIDRs and groups (no IPv6, no prefix lists)"
            )
        ranges = perm.get("IpRanges", [])
        pairs = perm.get("UserIdGroupPairs", [])
        if not ranges and not pairs:
            raise Ec2Error(
                "MissingParameter",
                "The request must contain the parameter IpRanges or UserIdGroupPairs (a rule needs a peer)",
            )
        for r in ranges:
            if not r.get("CidrIp"):
                raise Ec2Error("MissingParameter", "The request must contain the parameter CidrIp")
            specs.append(RuleSpec(egress, protocol, lo, hi, cidr=_cidr(r["CidrIp"]), description=_desc(r)))
        for g in pairs:
            if not g.get("GroupId"):
                raise Ec2Error(
                    "MissingParameter", "The request must contain the parameter GroupId (in UserIdGroupPairs)"
                )
            specs.append(RuleSpec(egress, protocol, lo, hi, group_id=str(g["GroupId"]), description=_desc(g)))
    return specs


def _desc(peer: Mapping[str, Any]) -> str:
    text = str(peer.get("Description", ""))
    if len(text) > 255:
        raise invalid_value("A rule description is at most 255 characters")
    return text


def flat_permission(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The older flat form of Authorize/Revoke (IpProtocol, FromPort, ToPort, CidrIp) as one IpPermission."""
    if "CidrIp" not in params and "IpProtocol" not in params:
        return []
    perm: dict[str, Any] = {"IpProtocol": params.get("IpProtocol", "-1")}
    for name in ("FromPort", "ToPort"):
        if name in params:
            perm[name] = params[name]
    if "CidrIp" in params:
        perm["IpRanges"] = [{"CidrIp": params["CidrIp"]}]
    return [perm]
