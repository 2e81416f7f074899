#!/usr/bin/env python3
"""Regenerate vpcnet/ipam/data/instance_types.json from the EC2 instance-type data moto ships.

moto's file is a dump of DescribeInstanceTypes for every type AWS offers; we keep only what
pod networking needs. Run with moto installed:
    pip install moto==5.2.5 && python scripts/gen_instance_types.py
"""

from __future__ import annotations

import gzip
import json
import sys
from importlib import resources
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "vpcnet" / "ipam" / "data" / "instance_types.json"


def summarise(raw: dict) -> dict:
    net = raw["NetworkInfo"]
    cards = sorted(net.get("NetworkCards", []), key=lambda c: c["NetworkCardIndex"])
    default_card = net.get("DefaultNetworkCardIndex", 0)
    return {
        "vcpus": raw["VCpuInfo"]["DefaultVCpus"],
        "hypervisor": raw.get("Hypervisor", ""),
        "bare_metal": bool(raw.get("BareMetal", False)),
        "max_enis": net["MaximumNetworkInterfaces"],
        "ipv4_per_eni": net["Ipv4AddressesPerInterface"],
        "default_card": default_card,
        # ENIs per network card; card 0 is the one the default path (and the VPC CNI) uses.
        "cards": [c["MaximumNetworkInterfaces"] for c in cards] or [net["MaximumNetworkInterfaces"]],
    }


def main() -> int:
    src = resources.files("moto.ec2.resources").joinpath("instance_types.json.gz")
    with src.open("rb") as fh, gzip.open(fh) as unzipped:
        data = json.load(unzipped)
    table = {name: summarise(raw) for name, raw in sorted(data.items())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"source": "moto instance_types.json.gz", "types": table}, indent=0, sort_keys=True) + "\n"
    )
    print(f"wrote {len(table)} instance types to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
