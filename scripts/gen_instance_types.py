#!/usr/bin/env python3
"""Regenerate vpcnet/ipam/data/instance_types.json from the published instance-type sources in scripts/data/.

Offline and reproducible: `python scripts/gen_instance_types.py` reads only these files.
- moto-5.2.5-instance_types.json.gz: moto's dump of EC2 DescribeInstanceTypes (vCPUs, ENIs, IPv4 and
  IPv6 per ENI, network cards, hypervisor, bare metal).
- vpc-cni-limits.tsv: rows of the VPC CNI's own limits table (pkg/vpc/vpc_ip_resource_limit.go), see its
  header.
- vpc-resource-controller-branch-limits.tsv: (type, trunking compatible, branch interfaces) read from the
  VPC resource controller's limits table (pkg/aws/vpc/limits.go), see its header; fills `trunking` and
  `branch_interfaces` (null, with trunking false, for types it does not list).
- eni-max-pods.txt: the VPC CNI's max-pods file, what the EKS AMI uses; it only arbitrates where the two
  limits sources disagree, and is what the table is tested against (tests/unit/ipam/test_instance_table.py).

The table is the union of the limits sources (rule in merge()); every field on which they differ is recorded
under "disagreements" with the side chosen. Each row names its sources.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "scripts" / "data"
OUT = ROOT / "vpcnet" / "ipam" / "data" / "instance_types.json"
MOTO = DATA / "moto-5.2.5-instance_types.json.gz"
VPC_CNI = DATA / "vpc-cni-limits.tsv"
ENI_MAX_PODS = DATA / "eni-max-pods.txt"
BRANCH_LIMITS = DATA / "vpc-resource-controller-branch-limits.tsv"

Row = dict[str, Any]
LIMIT_FIELDS = ("max_enis", "ipv4_per_eni", "cards", "default_card", "hypervisor", "bare_metal")


def moto_row(raw: dict[str, Any]) -> Row:
    net = raw["NetworkInfo"]
    cards = sorted(net.get("NetworkCards", []), key=lambda c: c["NetworkCardIndex"])
    return {
        "vcpus": raw["VCpuInfo"]["DefaultVCpus"],
        "hypervisor": raw.get("Hypervisor", ""),
        "bare_metal": bool(raw.get("BareMetal", False)),
        "max_enis": net["MaximumNetworkInterfaces"],
        "ipv4_per_eni": net["Ipv4AddressesPerInterface"],
        # EC2 counts IPv6 addresses (and /80 prefixes) per ENI apart from IPv4; 0 where IPv6 is unsupported.
        "ipv6_per_eni": net.get("Ipv6AddressesPerInterface", 0) if net.get("Ipv6Supported") else 0,
        "default_card": net.get("DefaultNetworkCardIndex", 0),
        # ENIs per network card; card 0 is the one the default path (and the VPC CNI) uses.
        "cards": [c["MaximumNetworkInterfaces"] for c in cards] or [net["MaximumNetworkInterfaces"]],
    }


def read_moto(path: Path = MOTO) -> dict[str, Row]:
    with gzip.open(path) as fh:
        data = json.load(fh)
    return {name: moto_row(raw) for name, raw in data.items()}


def read_vpc_cni(path: Path = VPC_CNI) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 7 or fields[4] not in ("true", "false"):
            raise ValueError(f"{path}:{lineno}: expected 7 tab-separated fields, got {line!r}")
        name, enis, ipv4, hypervisor, metal, default_card, cards = fields
        rows[name] = {
            "max_enis": int(enis),
            "ipv4_per_eni": int(ipv4),
            # the Go table says "unknown" where EC2 reports no hypervisor (bare metal, some old types)
            "hypervisor": "" if hypervisor == "unknown" else hypervisor,
            "bare_metal": metal == "true",
            "default_card": int(default_card),
            # ENILimit is what the default card takes; an empty card list ("-") leaves the cards unknown
            "cards": [int(c) for c in cards.split(",")] if cards != "-" else None,
        }
    return rows


def read_branch_limits(path: Path = BRANCH_LIMITS) -> dict[str, tuple[bool, int]]:
    """`TYPE<TAB>true|false<TAB>BRANCHES` rows: trunking compatible and branch ENIs per trunk."""
    table: dict[str, tuple[bool, int]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[1] not in ("true", "false") or not fields[2].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'TYPE<TAB>true|false<TAB>BRANCHES', got {line!r}")
        trunking, branches = fields[1] == "true", int(fields[2])
        if trunking != (branches > 0):
            raise ValueError(f"{path}:{lineno}: trunking {fields[1]} with {branches} branch interfaces")
        if fields[0] in table:
            raise ValueError(f"{path}:{lineno}: {fields[0]} listed twice")
        table[fields[0]] = (trunking, branches)
    return table


def read_eni_max_pods(path: Path) -> dict[str, int]:
    """`TYPE MAXPODS` lines; comments and blank lines skipped."""
    table: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'TYPE MAXPODS', got {line!r}")
        table[fields[0]] = int(fields[1])
    return table


_SIZE = re.compile(r"^(?P<n>\d*)xlarge$")
_SMALL_SIZES = {"nano": 1, "micro": 1, "small": 1, "medium": 1, "large": 2}


def estimate_vcpus(name: str, known: dict[str, Row]) -> int:
    """vCPUs for a type only the VPC CNI's table lists (it has no vCPU column); they only choose the max-pods
    cap (110 below 31 vCPUs, 250 from 31). EC2's size names count 4 vCPUs per xlarge; a .metal type is the
    whole host, so at least its family's largest size; a metal type with no sibling is estimated from the
    smallest type with the same ENI and IP limits."""
    family, _, size = name.partition(".")
    if size in _SMALL_SIZES:
        return _SMALL_SIZES[size]
    m = _SIZE.match(size)
    if m:
        return 4 * int(m["n"] or 1)
    siblings = [r["vcpus"] for n, r in known.items() if n.partition(".")[0] == family and "vcpus" in r]
    if siblings:
        return max(siblings)
    row = known[name]
    alike = [
        r["vcpus"]
        for r in known.values()
        if "vcpus" in r and (r["max_enis"], r["ipv4_per_eni"]) == (row["max_enis"], row["ipv4_per_eni"])
    ]
    if not alike:
        raise ValueError(f"{name}: no way to estimate its vCPUs")
    return min(alike)


def default_card_max_pods(row: Row) -> int:
    """eni-max-pods.txt's formula: ENIs of the default card x (IPv4 per ENI - 1) + 2."""
    return int(row["cards"][row["default_card"]]) * (int(row["ipv4_per_eni"]) - 1) + 2


def completed(v: Row, m: Row | None) -> Row:
    """A VPC CNI row with its unknowns filled: cards from EC2 where the Go table left them empty."""
    row = dict(v)
    if row["cards"] is None:
        same_card0 = m is not None and m["cards"][m["default_card"]] == row["max_enis"]
        row["cards"] = list(m["cards"]) if m is not None and same_card0 else [row["max_enis"]]
    row["max_enis"] = sum(row["cards"])  # all cards together, as EC2 counts it
    if not row["hypervisor"] and m is not None:
        row["hypervisor"] = m["hypervisor"]  # the Go table's "unknown" adds nothing to EC2's answer
    return row


def merge(
    moto: dict[str, Row],
    vpc_cni: dict[str, Row],
    max_pods: dict[str, int],
    branches: dict[str, tuple[bool, int]] | None = None,
) -> tuple[dict[str, Row], list[Row]]:
    """Union of the two limits sources. Where both list a type and differ, the one whose default-card
    max-pods matches eni-max-pods.txt (the newest VPC CNI data, what the EKS AMI uses) wins; with no such
    entry, or neither matching, the VPC CNI's limits table wins (it is what the VPC CNI runs on)."""
    table: dict[str, Row] = {}
    disagreements: list[Row] = []
    for name in sorted(set(moto) | set(vpc_cni)):
        m, raw_v = moto.get(name), vpc_cni.get(name)
        v = completed(raw_v, m) if raw_v is not None else None
        row: Row = dict(m) if m else {"ipv6_per_eni": 0}
        row["sources"] = [s for s, r in (("ec2-moto", m), ("vpc-cni", v)) if r]
        trunk = (branches or {}).get(name)
        row["trunking"] = trunk is not None and trunk[0]
        row["branch_interfaces"] = None if trunk is None else trunk[1]
        if v is not None:
            chosen, winner = v, "vpc-cni"
            expected = max_pods.get(name)
            if (
                m is not None
                and default_card_max_pods(v) != expected
                and default_card_max_pods(m) == expected
            ):
                chosen, winner = m, "ec2-moto"
            differ = [f for f in LIMIT_FIELDS if m is not None and m[f] != v[f]]
            for field in differ:
                assert m is not None
                disagreements.append(
                    {
                        "type": name,
                        "field": field,
                        "ec2-moto": m[field],
                        "vpc-cni": v[field],
                        "chosen": winner,
                    }
                )
            for field in LIMIT_FIELDS:
                row[field] = chosen[field]
        table[name] = row
    for name, row in table.items():
        if "vcpus" not in row:
            row["vcpus"] = estimate_vcpus(name, table)
            row["vcpus_estimated"] = True
    return table, disagreements


def main() -> int:
    table, disagreements = merge(
        read_moto(), read_vpc_cni(), read_eni_max_pods(ENI_MAX_PODS), read_branch_limits()
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": "union of scripts/data: moto-5.2.5 DescribeInstanceTypes dump and the VPC CNI's limits "
        "table, arbitrated by eni-max-pods.txt; see scripts/gen_instance_types.py",
        "disagreements": disagreements,
        "types": table,
    }
    OUT.write_text(json.dumps(document, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(table)} instance types ({len(disagreements)} disagreements) to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
