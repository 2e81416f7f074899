"""The pod fence: node services a pod must never reach, whatever network policy says.

filter: FORWARD and INPUT -i <prefix>+ -> VPCNET-POD-FENCE (inserted at the top when missing)
        VPCNET-POD-FENCE: to a datastore endpoint (etcd's address and port) REJECT with a TCP reset;
        with block_imds, to the instance metadata service (169.254.169.254) likewise, and any other
        protocol to it rejected with an ICMP error.

Why: etcd holds every policy, and whoever writes it decides what the cluster enforces; IMDS hands out the
node's instance-role credentials (EKS's guidance is to block pods from it, or set the PUT hop limit to 1).
A rejection, not a drop: a pod's client learns at once instead of hanging in SYN retries.
The jump sits in INPUT too: a datastore on the node's own address is delivered, not forwarded.
Both chains are matched on the pod veths' prefix, so the node itself (its agent) reaches both as before.

Render is pure (golden-tested); apply is one `iptables-restore --noflush` that empties and refills the
chain and adds a jump only when `iptables-save` shows it missing, so applying twice changes nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from vpcnet.dataplane.hostnet import parse_save, run_iptables

log = logging.getLogger(__name__)

FENCE_CHAIN = "VPCNET-POD-FENCE"
IMDS_ADDRESS = IPv4Address("169.254.169.254")
_JUMP_COMMENT = "vpcnet, pod fence"


@dataclass(frozen=True)
class PodFence:
    veth_prefix: str
    datastore: tuple[tuple[IPv4Address, int], ...]  # etcd endpoints as (address, TCP port)
    block_imds: bool = False
    imds_address: IPv4Address = IMDS_ADDRESS


def jump_rules(fence: PodFence) -> list[str]:
    """The jumps into the fence, exactly as iptables-save prints them."""
    return [
        f'-A {hook} -i {fence.veth_prefix}+ -m comment --comment "{_JUMP_COMMENT}" -j {FENCE_CHAIN}'
        for hook in ("FORWARD", "INPUT")
    ]


def chain_rules(fence: PodFence) -> list[str]:
    rules = [
        f"-A {FENCE_CHAIN} -d {address}/32 -p tcp -m tcp --dport {port} "
        '-m comment --comment "vpcnet, pods off the datastore" -j REJECT --reject-with tcp-reset'
        for address, port in sorted(set(fence.datastore))
    ]
    if fence.block_imds:
        imds = f"{fence.imds_address}/32"
        rules += [
            f'-A {FENCE_CHAIN} -d {imds} -p tcp -m comment --comment "vpcnet, pods off IMDS" '
            "-j REJECT --reject-with tcp-reset",
            f'-A {FENCE_CHAIN} -d {imds} -m comment --comment "vpcnet, pods off IMDS" '
            "-j REJECT --reject-with icmp-port-unreachable",
        ]
    return rules


def render(fence: PodFence, present: set[str] | None = None) -> str:
    """iptables-restore --noflush input for the filter table: the chain emptied and refilled, and the jumps
    not in `present` (the filter table's rule lines as iptables-save shows them) inserted at the top."""
    have = present or set()
    lines = ["*filter", f":{FENCE_CHAIN} - [0:0]", *chain_rules(fence)]
    lines += ["-I" + jump[2:].replace(" -i ", " 1 -i ", 1) for jump in jump_rules(fence) if jump not in have]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def resolve_endpoints(endpoints: Sequence[tuple[str, int]]) -> tuple[tuple[IPv4Address, int], ...]:
    """(host, port) pairs as IPv4 (address, port): names resolved now; loopback skipped (a pod cannot reach
    the node's loopback anyway); a name that does not resolve is logged and left out (nothing to match)."""
    out: list[tuple[IPv4Address, int]] = []
    for host, port in endpoints:
        try:
            literal = ip_address(host)
            addresses = [literal] if isinstance(literal, IPv4Address) else []
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("pod fence: datastore endpoint %s does not resolve (%s); not fenced", host, exc)
                continue
            addresses = [IPv4Address(str(info[4][0])) for info in infos]
        out += [(a, port) for a in addresses if not a.is_loopback]
    return tuple(dict.fromkeys(out))


async def apply_pod_fence(fence: PodFence, netns: str | None = None) -> None:
    """Make the fence what `fence` says (idempotent). netns: the node's namespace path (None: ours)."""
    present = parse_save(await run_iptables(["iptables-save", "-t", "filter"], netns)).get("filter", set())
    await run_iptables(["iptables-restore", "--noflush", "-w", "5"], netns, render(fence, present))
