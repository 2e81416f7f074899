"""A small lab as `vpcnet lab status -o json` reports it, and its pods, for the picture and console tests."""

from __future__ import annotations

from typing import Any

from vpcnet.cli.topology_picture import PodPlace


def _eni(eni: str, index: int, subnet: str, primary: str, secondary: list[str]) -> dict[str, Any]:
    return {
        "id": eni,
        "device_index": index,
        "mac": "02:00:00:00:00:0" + str(index),
        "subnet_id": subnet,
        "primary_ip": primary,
        "secondary_ips": secondary,
        "prefixes": [],
        "source_dest_check": True,
    }


def _node(name: str, inst: str, subnet: str, cidr: str, az: str, ip: str, enis: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "netns": f"t-{name}",
        "instance_id": inst,
        "instance_type": "t3.medium",
        "az": az,
        "subnet": "nodes-a",
        "subnet_id": subnet,
        "subnet_cidr": cidr,
        "primary_ip": ip,
        "enis": enis,
        "agent": "ready",
    }


STATUS: dict[str, Any] = {
    "prefix": "t",
    "up": True,
    "vpc": {"id": "vpc-1", "cidr": "10.0.0.0/16", "region": "us-east-1"},
    "subnets": {
        "nodes-a": {"id": "subnet-a", "cidr": "10.0.1.0/24", "az": "us-east-1a", "role": "nodes"},
        "nodes-b": {"id": "subnet-b", "cidr": "10.0.2.0/24", "az": "us-east-1b", "role": "nodes"},
    },
    "nodes": [
        _node(
            "node1", "i-1", "subnet-a", "10.0.1.0/24", "us-east-1a", "10.0.1.10",
            [_eni("eni-1", 0, "subnet-a", "10.0.1.10", ["10.0.1.11", "10.0.1.12", "10.0.1.13"])],
        ),
        _node(
            "node2", "i-2", "subnet-b", "10.0.2.0/24", "us-east-1b", "10.0.2.10",
            [
                _eni("eni-2", 0, "subnet-b", "10.0.2.10", []),
                _eni("eni-3", 1, "subnet-b", "10.0.2.20", ["10.0.2.21"]),
            ],
        ),
    ],
}  # fmt: skip

PODS = [
    PodPlace("x/a", "node1", "10.0.1.12", "eni-1"),
    PodPlace("x/b", "node2", "10.0.2.21", None),  # ENI not looked up yet: found by its address
    PodPlace("y/c", "node2", "192.168.5.3", None),  # a pool address: on no ENI
]
