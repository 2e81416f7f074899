from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from vpcnet.agent.config import ConfigError, load_config
from vpcnet.agent.eniconfig import load_eni_config
from vpcnet.agent.vpc_ipam import instance_type_limits
from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.cloud.node import NodeInfo
from vpcnet.testing.simulated_ec2 import SimulatedEc2

NODE = NodeInfo(
    instance_id="i-1", instance_type="m5.large", availability_zone="us-west-2b", region="us-west-2",
    primary_eni_id="eni-1", primary_mac="02:00:00:00:00:01", primary_ip=IPv4Address("10.0.0.10"),
    subnet_id="subnet-a", subnet_cidr=IPv4Network("10.0.0.0/19"), vpc_id="vpc-1",
    vpc_cidrs=(IPv4Network("10.0.0.0/16"),), security_groups=("sg-1",),
)  # fmt: skip

ENICONFIGS = """
apiVersion: crd.k8s.amazonaws.com/v1alpha1
kind: ENIConfig
metadata: {name: us-west-2a}
spec: {subnet: subnet-0aaaaaaa, securityGroups: [sg-0aaaaaaa]}
---
apiVersion: crd.k8s.amazonaws.com/v1alpha1
kind: ENIConfig
metadata: {name: us-west-2b}
spec: {subnet: subnet-0bbbbbbb, securityGroups: [sg-0bbbbbbb]}
"""


def cfg(tmp_path: Path, text: str, name: str = "") -> object:
    f = tmp_path / "eniconfig.yaml"
    f.write_text(text)
    env = {"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "VPCNET_ENI_CONFIG_FILE": str(f)}
    if name:
        env["ENI_CONFIG_NAME"] = name
    return load_config(env)


def test_eniconfig_by_availability_zone_then_by_name(tmp_path: Path) -> None:
    assert load_eni_config(cfg(tmp_path, ENICONFIGS), NODE)["subnet"] == "subnet-0bbbbbbb"  # type: ignore[arg-type]
    chosen = load_eni_config(cfg(tmp_path, ENICONFIGS, "us-west-2a"), NODE)  # type: ignore[arg-type]
    assert chosen["securityGroups"] == ["sg-0aaaaaaa"]


def test_eniconfig_errors_name_the_file_and_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ENIConfig named nope"):
        load_eni_config(cfg(tmp_path, ENICONFIGS, "nope"), NODE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"VPCNET_ENI_CONFIG_FILE=.*spec.subnet"):
        load_eni_config(cfg(tmp_path, "kind: ENIConfig\nmetadata: {name: x}\nspec: {}\n"), NODE)  # type: ignore[arg-type]
    bad_group = "kind: ENIConfig\nmetadata: {name: us-west-2b}\n"
    bad_group += "spec: {subnet: subnet-0aaaaaaa, securityGroups: [web]}\n"
    with pytest.raises(ConfigError, match=r"spec.securityGroups\[0\]: must be a security group id"):
        load_eni_config(cfg(tmp_path, bad_group), NODE)  # type: ignore[arg-type]


def test_limits_from_ec2_are_cached_and_the_table_is_the_fallback(tmp_path: Path) -> None:
    ec2 = SimulatedEc2(latency={})  # EC2's answers come from the lab's engine (the bundled table)

    async def body() -> None:
        got = await instance_type_limits(ec2, "m5.large", tmp_path)
        assert (got.max_enis, got.ipv4_per_eni, got.is_nitro) == (3, 10, True)
        assert (tmp_path / "instance-types.json").exists()
        ec2.fail_next["DescribeInstanceTypes"] = Ec2Error("DescribeInstanceTypes", "Unavailable", "down", 503)
        again = await instance_type_limits(ec2, "m5.large", tmp_path)  # from the cache: no call
        assert again == got and "DescribeInstanceTypes" in ec2.fail_next
        # EC2 fails (the injected error is still pending: the cached call made none): the bundled table
        table = await instance_type_limits(ec2, "t3.medium", tmp_path)
        assert "DescribeInstanceTypes" not in ec2.fail_next
        assert (table.max_enis, table.ipv4_per_eni) == (3, 6)
        with pytest.raises(ConfigError, match=r"no-such\.type"):
            await instance_type_limits(ec2, "no-such.type", tmp_path)

    asyncio.run(body())
