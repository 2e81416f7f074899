#!/usr/bin/env python3
"""Regenerate vpcnet/ipam/data/instance_types.json from the EC2 instance-type data moto ships.

moto's file is a dump of DescribeInstanceTypes for every type AWS offers; we keep only what
pod networking needs. Run with moto installed:
    pip install moto==5.2.5 && python scripts/gen_instance_types.py [path/to/instance_types.json.gz]
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
        # EC2 counts IPv6 addresses (and /80 prefixes) per ENI apart from IPv4; 0 where IPv6 is unsupported.
        "ipv6_per_eni": net.get("Ipv6AddressesPerInterface", 0) if net.get("Ipv6Supported") else 0,
        "default_card": default_card,
        # ENIs per network card; card 0 is the one the default path (and the VPC CNI) uses.
        "cards": [c["MaximumNetworkInterfaces"] for c in cards] or [net["MaximumNetworkInterfaces"]],
    }


def main() -> int:
    # The dump's path may be given instead (moto's package import needs all of moto's dependencies).
    src = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else resources.files("moto.ec2.resources").joinpath("instance_types.json.gz")
    )
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
