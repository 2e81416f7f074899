"""The pod fence: node services a pod must never reach, whatever network policy says.

filter: FORWARD and INPUT -i <prefix>+ -> VPCNET-POD-FENCE (inserted at the top when missing)
        VPCNET-POD-FENCE: to a datastore endpoint (etcd's address and port) REJECT with a TCP reset;
        with block_imds, to the instance metadata service likewise, and any other protocol to it
        rejected with an ICMP error.

One chain per family: iptables holds the IPv4 endpoints and IMDS at 169.254.169.254; ip6tables, when the
node has IPv6 pods, holds the IPv6 endpoints and IMDS at fd00:ec2::254 (the Nitro IPv6 endpoint). A rule
only ever matches its own family's addresses, so an endpoint given as an IPv6 address is fenced in
ip6tables and nowhere else.

Why: etcd holds every policy, and whoever writes it decides what the cluster enforces; IMDS hands out the
node's instance-role credentials (EKS's guidance is to block pods from it, or set the PUT hop limit to 1).
A rejection, not a drop: a pod's client learns at once instead of hanging in SYN retries.
The jump sits in INPUT too: a datastore on the node's own address is delivered, not forwarded.
Both chains are matched on the pod veths' prefix, so the node itself (its agent) reaches both as before.

Render is pure (golden-tested); apply is one `<family>-restore --noflush` per family that empties and
refills the chain and adds a jump only when `-save` shows it missing, so applying twice changes nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from vpcnet.dataplane.hostnet import parse_save, run_iptables

log = logging.getLogger(__name__)

FENCE_CHAIN = "VPCNET-POD-FENCE"
IMDS_ADDRESS = IPv4Address("169.254.169.254")
IMDS_ADDRESS6 = IPv6Address("fd00:ec2::254")
_JUMP_COMMENT = "vpcnet, pod fence"

Address = IPv4Address | IPv6Address
Family = Literal[4, 6]
# Per family: the save/restore commands and the ICMP error for what is not TCP.
_COMMANDS: dict[int, tuple[str, str, str]] = {
    4: ("iptables-save", "iptables-restore", "icmp-port-unreachable"),
    6: ("ip6tables-save", "ip6tables-restore", "icmp6-port-unreachable"),
}


@dataclass(frozen=True)
class PodFence:
    veth_prefix: str
    datastore: tuple[tuple[Address, int], ...]  # etcd endpoints as (address, TCP port), either family
    block_imds: bool = False
    imds_address: IPv4Address = IMDS_ADDRESS
    ipv6: bool = False  # the node has IPv6 pods: the ip6tables chain is kept too
    imds_address6: IPv6Address = IMDS_ADDRESS6

    def families(self) -> tuple[Family, ...]:
        return (4, 6) if self.ipv6 else (4,)


def jump_rules(fence: PodFence) -> list[str]:
    """The jumps into the fence, exactly as iptables-save (and ip6tables-save) print them."""
    return [
        f'-A {hook} -i {fence.veth_prefix}+ -m comment --comment "{_JUMP_COMMENT}" -j {FENCE_CHAIN}'
        for hook in ("FORWARD", "INPUT")
    ]


def chain_rules(fence: PodFence, family: Family = 4) -> list[str]:
    host = 32 if family == 4 else 128
    rules = [
        f"-A {FENCE_CHAIN} -d {address}/{host} -p tcp -m tcp --dport {port} "
        '-m comment --comment "vpcnet, pods off the datastore" -j REJECT --reject-with tcp-reset'
        for address, port in sorted({e for e in fence.datastore if e[0].version == family}, key=_order)
    ]
    if fence.block_imds:
        imds = f"{fence.imds_address if family == 4 else fence.imds_address6}/{host}"
        rules += [
            f'-A {FENCE_CHAIN} -d {imds} -p tcp -m comment --comment "vpcnet, pods off IMDS" '
            "-j REJECT --reject-with tcp-reset",
            f'-A {FENCE_CHAIN} -d {imds} -m comment --comment "vpcnet, pods off IMDS" '
            f"-j REJECT --reject-with {_COMMANDS[family][2]}",
        ]
    return rules


def _order(endpoint: tuple[Address, int]) -> tuple[int, int, int]:
    return (endpoint[0].version, int(endpoint[0]), endpoint[1])


def render(fence: PodFence, present: set[str] | None = None, family: Family = 4) -> str:
    """<family>-restore --noflush input for the filter table: the chain emptied and refilled, and the jumps
    not in `present` (the filter table's rule lines as -save shows them) inserted at the top."""
    have = present or set()
    lines = ["*filter", f":{FENCE_CHAIN} - [0:0]", *chain_rules(fence, family)]
    lines += ["-I" + jump[2:].replace(" -i ", " 1 -i ", 1) for jump in jump_rules(fence) if jump not in have]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def resolve_endpoints(endpoints: Sequence[tuple[str, int]]) -> tuple[tuple[Address, int], ...]:
    """(host, port) pairs as (address, port) of either family: names resolved now; loopback skipped (a pod
    cannot reach the node's loopback anyway); a name that does not resolve is logged and left out."""
    out: list[tuple[Address, int]] = []
    for host, port in endpoints:
        try:
            addresses: list[Address] = [ip_address(host)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("pod fence: datastore endpoint %s does not resolve (%s); not fenced", host, exc)
                continue
            # an IPv6 answer may carry a zone ("fe80::1%eth0"): a link-local is no pod's to reach anyway
            addresses = [ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        out += [(a, port) for a in addresses if not a.is_loopback]
    return tuple(dict.fromkeys(out))


async def apply_pod_fence(fence: PodFence, netns: str | None = None) -> None:
    """Make the fence what `fence` says, in each of its families (idempotent). netns: the node's namespace
    path (None: ours)."""
    for family in fence.families():
        save, restore, _ = _COMMANDS[family]
        present = parse_save(await run_iptables([save, "-t", "filter"], netns)).get("filter", set())
        await run_iptables([restore, "--noflush", "-w", "5"], netns, render(fence, present, family))
