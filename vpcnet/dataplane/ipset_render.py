"""Render ipset changes as `ipset restore` input (pure).

Small membership changes go as add/del lines; a set that changes a lot (or whose kernel copy is unknown
or wrong) is rebuilt in a temporary set and swapped in, so packets never see a half-filled set.
Sets that are no longer wanted are destroyed in a separate step, after the rules stop referring to them.
Sets are of one family ("family inet" / "inet6"); an applier owns only the sets named for its family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import IpSetSpec

MAXELEM = 1048576  # Calico's MaxIpsetSize
INCREMENTAL_LIMIT = 64  # more changes than this: rebuild and swap


@dataclass(frozen=True)
class KernelSet:
    kind: str
    members: frozenset[str]


def create_line(name: str, kind: str, family: IpFamily = IpFamily.V4) -> str:
    return f"create {name} {kind} family {family.ipset_family} maxelem {MAXELEM}"


def render_updates(
    desired: Mapping[str, IpSetSpec], current: Mapping[str, KernelSet], family: IpFamily = IpFamily.V4
) -> list[str]:
    """Lines that make every desired set exist with exactly its members (destroys are separate)."""
    lines: list[str] = []
    for name in sorted(desired):
        spec = desired[name]
        have = current.get(name)
        if have is None:
            lines.append(create_line(name, spec.kind, family))
            lines += [f"add {name} {m}" for m in sorted(spec.members)]
            continue
        if have.kind != spec.kind:
            raise ValueError(f"ipset {name} is {have.kind} in the kernel, not {spec.kind}: destroy it first")
        if have.members is spec.members:
            continue
        adds = spec.members - have.members
        dels = have.members - spec.members
        if not adds and not dels:
            continue
        if len(adds) + len(dels) <= INCREMENTAL_LIMIT:
            lines += [f"del {name} {m}" for m in sorted(dels)]
            lines += [f"add {name} {m}" for m in sorted(adds)]
            continue
        temp = names.temp_ipset_name(name, family)
        lines.append(create_line(temp, spec.kind, family))
        lines.append(f"flush {temp}")
        lines += [f"add {temp} {m}" for m in sorted(spec.members)]
        lines.append(f"swap {temp} {name}")
        lines.append(f"destroy {temp}")
    return lines


def render_deletes(desired: Mapping[str, IpSetSpec], current: Mapping[str, KernelSet]) -> list[str]:
    return [f"destroy {name}" for name in sorted(current) if name not in desired]


def parse_save(
    text: str, owned_prefix: str | None = None, family: IpFamily = IpFamily.V4
) -> dict[str, KernelSet]:
    """Our sets of family from `ipset save` output (others' sets, and our sets of the other family, are
    ignored; temp sets are reported too). owned_prefix: by default, the family's set prefix."""
    if owned_prefix is None:
        owned_prefix = names.ipset_prefix(family)
    kinds: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1].startswith(owned_prefix):
            continue
        if parts[0] == "create":
            kinds[parts[1]] = parts[2]
            members.setdefault(parts[1], set())
        elif parts[0] == "add":
            member = parts[2]
            if kinds.get(parts[1]) == "hash:net" and "/" not in member:
                member += f"/{family.host_prefixlen}"
            members.setdefault(parts[1], set()).add(member)
    return {name: KernelSet(kind, frozenset(members.get(name, ()))) for name, kind in kinds.items()}
