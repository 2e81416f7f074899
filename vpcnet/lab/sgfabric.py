"""Security groups in the lab's VPC: the rules of every plugged ENI's groups rendered as nft (pure), applied
with the fabric's table in one transaction.

As the VPC does: per ENI, both directions (a new flow must pass the egress rules of the sender's ENI and the
ingress rules of the receiver's ENI), stateful (replies of an allowed flow and related ICMP pass whatever the
rules say), and a rule that references a group matches the addresses of that group's members (every private
address and prefix of each ENI in the group), kept in one nft set per group and re-rendered with every ENI,
address, membership or rule change.

How it sits in the kernel of the VPC namespace. The bridge family cannot track connections on this kernel
(no nf_conntrack_bridge), so conntrack runs in the ip family: bridged IPv4 goes through the ip hooks by
br_netfilter (net.bridge.bridge-nf-call-iptables=1), routed IPv4 through the router's own. An ip-family
chain marks packets of known flows (`TRACKED_MARK`, after conntrack); the bridge-family chains, which see the
ENI ports, pass marked packets and send the others through the ENI's rules:
- sender: bridge prerouting at priority 100 (after br_netfilter's conntrack at 0, after the fabric's
  source/dest check at -200), by the input port;
- receiver: bridge forward (bridged, same subnet) and bridge output (routed by the VPC router), by the port.

Not subject to groups: ARP, IPv6 (not enforced yet), and traffic to or from the lab's control-plane addresses
(EC2 endpoint, etcd relay, IMDS). On EC2, IMDS is never filtered; an interface endpoint is reached through
its own group and the ENI's egress rules. The lab keeps its control plane reachable whatever an ENI's groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from vpcnet.lab.ec2.model import SecurityGroup, SgRule
from vpcnet.lab.layout import EC2_ENDPOINT_ADDRESS, ETCD_ENDPOINT_ADDRESS, IMDS_ADDRESS

TRACKED_MARK = 0x40000000  # a packet of a flow conntrack already knows (established or related)
CONTROL_PLANE = (EC2_ENDPOINT_ADDRESS, ETCD_ENDPOINT_ADDRESS, IMDS_ADDRESS)
BRIDGE_CALLS_IPTABLES = "net.bridge.bridge-nf-call-iptables"  # bridged IPv4 through the ip hooks: conntrack


class SgPort(Protocol):
    """What the rendering needs of a plugged ENI (the fabric's EniWire has it)."""

    @property
    def port(self) -> str: ...

    @property
    def addresses(self) -> tuple[str, ...]: ...

    @property
    def prefixes(self) -> tuple[str, ...]: ...

    @property
    def security_groups(self) -> tuple[str, ...]: ...


def sg_table(fabric_table: str) -> str:
    return f"{fabric_table}_sg"


def members_set(group_id: str) -> str:
    return "m_" + group_id.replace("-", "_")


def match_of(rule: SgRule) -> str:
    """The nft match of a rule: its protocol and ports, then its peer (destination for egress)."""
    parts: list[str] = []
    if rule.protocol in ("tcp", "udp"):
        ports = str(rule.from_port) if rule.from_port == rule.to_port else f"{rule.from_port}-{rule.to_port}"
        parts.append(f"{rule.protocol} dport {ports}")
    elif rule.protocol == "icmp":
        parts.append("ip protocol icmp")
        if rule.from_port != -1:
            parts.append(f"icmp type {rule.from_port}")
            if rule.to_port != -1:
                parts.append(f"icmp code {rule.to_port}")
    elif rule.protocol == "icmpv6":
        parts.append("ip protocol 58")  # never an IPv4 packet: the rule is for IPv6 peers
    elif rule.protocol != "-1":
        parts.append(f"ip protocol {rule.protocol}")
    peer = "daddr" if rule.egress else "saddr"
    if rule.cidr:
        if rule.cidr != "0.0.0.0/0":
            parts.insert(0, f"ip {peer} {rule.cidr}")
    else:
        parts.insert(0, f"ip {peer} @{members_set(rule.group_id)}")
    return " ".join(parts)


def rules_chain(name: str, rules: Iterable[SgRule]) -> list[str]:
    """One ENI's chain for one direction: each allowing rule once, then drop."""
    lines = [f"  chain {name} {{"]
    seen: set[str] = set()
    for rule in rules:
        match = match_of(rule)
        if match not in seen:
            seen.add(match)
            lines.append(f"    {match} accept" if match else "    accept")
    lines += ["    drop", "  }"]
    return lines


def _set(name: str, elements: Sequence[str]) -> list[str]:
    lines = [f"  set {name} {{", "    type ipv4_addr; flags interval; auto-merge;"]
    if elements:
        lines.append(f"    elements = {{ {', '.join(elements)} }}")
    lines.append("  }")
    return lines


def render_security_groups(
    fabric_table: str, ports: Iterable[SgPort], groups: Mapping[str, SecurityGroup]
) -> str:
    """The ip table (marks of tracked flows) and the bridge table (the ENIs' rules), each replaced whole.
    A group the fabric does not know has no rules: its ENIs take nothing new (as a group without rules)."""
    table = sg_table(fabric_table)
    ports = sorted(ports, key=lambda p: p.port)
    lines = [f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{"]
    for chain, hook in (("tracked_in", "prerouting"), ("tracked_local", "output")):
        lines += [
            f"  chain {chain} {{",
            f"    type filter hook {hook} priority filter; policy accept;",
            f"    ct state established,related meta mark set meta mark | {TRACKED_MARK:#x}",
            "  }",
        ]
    lines += ["}", f"table bridge {table} {{}}", f"delete table bridge {table}", f"table bridge {table} {{"]
    lines += _set("control_plane", CONTROL_PLANE)
    members: dict[str, list[str]] = {gid: [] for gid in groups}
    for p in ports:
        for gid in p.security_groups:
            members.setdefault(gid, []).extend([*p.addresses, *p.prefixes])
    referenced = sorted({r.group_id for g in groups.values() for r in g.rules if r.group_id})
    for gid in referenced:
        lines += _set(members_set(gid), sorted(set(members.get(gid, []))))
    for p in ports:
        rules = [r for gid in p.security_groups if gid in groups for r in groups[gid].rules]
        lines += rules_chain(f"out_{p.port}", (r for r in rules if r.egress))
        lines += rules_chain(f"in_{p.port}", (r for r in rules if not r.egress))
    hooks = (
        ("sender", "prerouting", "iifname", "out", "daddr"),
        ("receiver_bridged", "forward", "oifname", "in", "saddr"),
        ("receiver_routed", "output", "oifname", "in", "saddr"),
    )
    for chain, hook, dev, direction, control in hooks:
        lines += [
            f"  chain {chain} {{",
            f"    type filter hook {hook} priority 100; policy accept;",
            "    meta protocol != ip accept",
            f"    meta mark & {TRACKED_MARK:#x} == {TRACKED_MARK:#x} accept",
            f"    ip {control} @control_plane accept",
        ]
        if ports:
            jumps = ", ".join(f'"{p.port}" : jump {direction}_{p.port}' for p in ports)
            lines.append(f"    {dev} vmap {{ {jumps} }}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
