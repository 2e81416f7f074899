"""Node-level rules for pods, as the VPC CNI sets them: SNAT for traffic leaving the VPC, connmark so that
replies (and non-VPC traffic) of pods on secondary ENIs leave through the primary ENI, and the sysctls.

nat:    POSTROUTING -> AWS-SNAT-CHAIN-0: VPC CIDRs and excluded CIDRs RETURN, everything else (not to a
        local address, not out of vlan+) SNAT --to-source <primary IP> --random-fully.
        PREROUTING -i <prefix>+ -> AWS-CONNMARK-CHAIN-0: VPC CIDRs RETURN, else set connmark 0x80; then
        PREROUTING restores the connmark into the packet mark (so this first packet already routes by the
        fwmark rule). The rules sit where the VPC CNI puts them: `iptables -t nat -S` reads as on EKS.
mangle: PREROUTING -> AWS-NODEPORT-CHAIN-0: connections entering on the primary interface for a local
        address get connmark 0x80; packets from pods restore it (replies route by the fwmark rule).
rule:   fwmark 0x80/0x80 lookup main, priority 1024.
With external SNAT, the SNAT and outbound-connmark chains are empty (the VPC CNI removes those rules).
IPv6 pods (ipv6_egress_v4 set): the VPC CNI puts no IPv4 SNAT or connmark rules (all pods are on the primary
ENI, IPv6 needs no NAT); its egress-v4 plugin SNATs each pod's node-local IPv4 to the node's primary IPv4.
Here that is one rule in the SNAT chain for the whole node-local range, and the node forwards IPv6.

Rendering is pure (golden-tested text). Applying touches only our chains: each is declared (which empties
it) and refilled in one `iptables-restore --noflush`; the jumps from the built-in chains are added only
when `iptables-save` shows them missing, so applying twice changes nothing. Order matters in PREROUTING
(restore after the connmark jump): if one of a table's jumps is missing, all of them are put back in order.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcnet.dataplane import nsenter

SNAT_CHAIN = "AWS-SNAT-CHAIN-0"
CONNMARK_CHAIN = "AWS-CONNMARK-CHAIN-0"
NODEPORT_CHAIN = "AWS-NODEPORT-CHAIN-0"
CONNMARK = "0x80"
FWMARK_RULE_PRIORITY = 1024
MAIN_TABLE = 254


@dataclass(frozen=True)
class HostNetConfig:
    primary_ip: IPv4Address
    vpc_cidrs: tuple[IPv4Network, ...]
    excluded_snat_cidrs: tuple[IPv4Network, ...] = ()
    external_snat: bool = False
    primary_interface: str = "eth0"
    veth_prefix: str = "eni"
    node_port_support: bool = True
    # IPv6 pods: their node-local IPv4 range (169.254.172.0/22), SNATed to primary_ip; None for IPv4 pods.
    ipv6_egress_v4: IPv4Network | None = None


def jump_rules(cfg: HostNetConfig) -> dict[str, list[str]]:
    """The rules in built-in chains that lead to ours, per table, exactly as iptables-save prints them."""
    return {
        "nat": [
            f'-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j {SNAT_CHAIN}',
            f'-A PREROUTING -i {cfg.veth_prefix}+ -m comment --comment "AWS, outbound connections" '
            f"-j {CONNMARK_CHAIN}",
            f'-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark '
            f"--nfmask {CONNMARK} --ctmask {CONNMARK}",
        ],
        "mangle": [f'-A PREROUTING -m comment --comment "AWS, primary ENI" -j {NODEPORT_CHAIN}'],
    }


def chain_rules(cfg: HostNetConfig) -> dict[str, dict[str, list[str]]]:
    """Our chains and their rules, per table."""
    snat: list[str] = []
    connmark: list[str] = []
    if cfg.ipv6_egress_v4 is not None:
        snat.append(
            f"-A {SNAT_CHAIN} -s {cfg.ipv6_egress_v4} "
            '-m comment --comment "vpcnet, IPv4 egress of IPv6 pods" '
            f"-j SNAT --to-source {cfg.primary_ip} --random-fully"
        )
    elif not cfg.external_snat:
        for cidr in cfg.vpc_cidrs:
            snat.append(f'-A {SNAT_CHAIN} -d {cidr} -m comment --comment "AWS SNAT CHAIN" -j RETURN')
        for cidr in cfg.excluded_snat_cidrs:
            snat.append(
                f'-A {SNAT_CHAIN} -d {cidr} -m comment --comment "AWS SNAT CHAIN EXCLUSION" -j RETURN'
            )
        snat.append(
            f'-A {SNAT_CHAIN} ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL '
            f"-j SNAT --to-source {cfg.primary_ip} --random-fully"
        )
        for cidr in (*cfg.vpc_cidrs, *cfg.excluded_snat_cidrs):
            connmark.append(
                f'-A {CONNMARK_CHAIN} -d {cidr} -m comment --comment "AWS CONNMARK CHAIN" -j RETURN'
            )
        connmark.append(
            f'-A {CONNMARK_CHAIN} -m comment --comment "AWS, CONNMARK" -j CONNMARK '
            f"--set-xmark {CONNMARK}/{CONNMARK}"
        )
    nodeport: list[str] = []
    if cfg.node_port_support:
        nodeport = [
            f'-A {NODEPORT_CHAIN} -i {cfg.primary_interface} -m comment --comment "AWS, primary ENI" '
            f"-m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark {CONNMARK}/{CONNMARK}",
            f'-A {NODEPORT_CHAIN} -i {cfg.veth_prefix}+ -m comment --comment "AWS, primary ENI" '
            f"-j CONNMARK --restore-mark --nfmask {CONNMARK} --ctmask {CONNMARK}",
        ]
    return {
        "nat": {SNAT_CHAIN: snat, CONNMARK_CHAIN: connmark},
        "mangle": {NODEPORT_CHAIN: nodeport},
    }


def render(cfg: HostNetConfig, present: dict[str, set[str]] | None = None) -> str:
    """iptables-restore --noflush input: our chains emptied and refilled, and the jumps not in `present`
    (per table, the rule lines iptables-save shows)."""
    present = present or {}
    jumps = jump_rules(cfg)
    lines: list[str] = []
    for table, chains in chain_rules(cfg).items():
        lines.append(f"*{table}")
        lines.extend(f":{name} - [0:0]" for name in chains)
        for rules in chains.values():
            lines.extend(rules)
        have = present.get(table, set())
        if any(j not in have for j in jumps[table]):
            lines.extend("-D" + j[2:] for j in jumps[table] if j in have)  # re-added below, in order
            lines.extend(jumps[table])
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_removal(present: dict[str, set[str]], cfg: HostNetConfig) -> str:
    """iptables-restore --noflush input that removes our jumps (those present) and our chains."""
    lines: list[str] = []
    jumps = jump_rules(cfg)
    for table, chains in chain_rules(cfg).items():
        lines.append(f"*{table}")
        lines.extend("-D" + j[2:] for j in jumps[table] if j in present.get(table, set()))
        lines.extend(f":{name} - [0:0]" for name in chains if name in present.get(f"{table}:chains", set()))
        lines.extend(f"-X {name}" for name in chains if name in present.get(f"{table}:chains", set()))
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class IptablesError(RuntimeError):
    pass


async def run_iptables(argv: list[str], netns: str | None, stdin: str = "") -> str:
    if netns is not None:
        argv = ["nsenter", f"--net={netns}", "--", *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode())
    if proc.returncode != 0:
        raise IptablesError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


def parse_save(text: str) -> dict[str, set[str]]:
    """iptables-save output -> per table the rule lines, and per "<table>:chains" the chain names."""
    out: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            out.setdefault(table, set())
            out.setdefault(f"{table}:chains", set())
        elif line.startswith(":") and table:
            out[f"{table}:chains"].add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A ") and table:
            out[table].add(line)
    return out


async def read_tables(netns: str | None) -> dict[str, set[str]]:
    present: dict[str, set[str]] = {}
    for table in ("nat", "mangle"):
        present.update(parse_save(await run_iptables(["iptables-save", "-t", table], netns)))
    return present


def node_sysctls(cfg: HostNetConfig) -> list[tuple[str, str]]:
    out = [
        (f"net/ipv4/conf/{cfg.primary_interface}/rp_filter", "2"),  # loose: NodePort replies, secondary ENIs
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/tcp_early_demux", "1"),
    ]
    if cfg.ipv6_egress_v4 is not None:  # the VPC CNI's init container in IPv6 mode
        out += [
            ("net/ipv6/conf/all/disable_ipv6", "0"),
            ("net/ipv6/conf/all/forwarding", "1"),
            # forwarding on would make the primary ENI ignore router advertisements: 2 keeps them
            (f"net/ipv6/conf/{cfg.primary_interface}/accept_ra", "2"),
        ]
    return out


async def apply_host_network(cfg: HostNetConfig, netns: str | None = None) -> None:
    """Make the node's pod rules what cfg says (idempotent). netns: the node's namespace path (None: ours)."""
    for name, value in node_sysctls(cfg):
        nsenter.write_sysctl(name, value, netns)
    present = await read_tables(netns)
    await run_iptables(["iptables-restore", "--noflush", "-w", "5"], netns, render(cfg, present))
    if not cfg.external_snat or cfg.node_port_support:
        ipr = AsyncIPRoute(use_socket=nsenter.netlink_socket(netns))
        try:
            await ipr.rule(
                "add",
                fwmark=int(CONNMARK, 16),
                fwmask=int(CONNMARK, 16),
                table=MAIN_TABLE,
                priority=FWMARK_RULE_PRIORITY,
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        finally:
            ipr.close()


async def remove_host_network(cfg: HostNetConfig, netns: str | None = None) -> None:
    present = await read_tables(netns)
    await run_iptables(["iptables-restore", "--noflush", "-w", "5"], netns, render_removal(present, cfg))
    ipr = AsyncIPRoute(use_socket=nsenter.netlink_socket(netns))
    try:
        await ipr.rule(
            "del", fwmark=int(CONNMARK, 16), fwmask=int(CONNMARK, 16), priority=FWMARK_RULE_PRIORITY
        )
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise
    finally:
        ipr.close()
