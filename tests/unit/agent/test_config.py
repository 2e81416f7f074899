from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from vpcnet.agent.config import ConfigError, Mode, WarmMode, load_config


def test_defaults_are_the_vpc_cnis() -> None:
    c = load_config({})
    assert c.warm_eni_target == 1
    assert c.warm_ip_target == 0 and c.minimum_ip_target == 0
    assert c.ip_cooldown_period == 30.0
    assert c.veth_prefix == "eni" and c.eni_mtu == 9001
    assert c.max_eni is None and not c.enable_prefix_delegation
    assert c.mode is Mode.VPC and c.warm_mode is WarmMode.STATIC
    assert c.metrics_port == 61678 and c.introspection_address == "127.0.0.1:61679"


def test_values_are_read() -> None:
    c = load_config(
        {
            "WARM_IP_TARGET": "3",
            "MINIMUM_IP_TARGET": "10",
            "MAX_ENI": "2",
            "IP_COOLDOWN_PERIOD": "5",
            "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.1.0.0/16, 172.16.0.0/12",
            "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true",
            "AWS_EC2_ENDPOINT": "http://10.0.255.254:8080/",
            "AWS_VPC_K8S_CNI_BACKING_STORE": "/tmp/x.json",
            "VPCNET_WARM_MODE": "adaptive",
            "DISABLE_METRICS": "true",
        }
    )
    assert (c.warm_ip_target, c.minimum_ip_target, c.max_eni) == (3, 10, 2)
    assert c.ip_cooldown_period == 5.0
    assert c.exclude_snat_cidrs == (IPv4Network("10.1.0.0/16"), IPv4Network("172.16.0.0/12"))
    assert c.external_snat
    assert c.ec2_endpoint == "http://10.0.255.254:8080"
    assert c.checkpoint_path == Path("/tmp/x.json")
    assert c.warm_mode is WarmMode.ADAPTIVE
    assert c.metrics_port is None
    assert c.env_settings()["exclude_snat_cidrs"] == ["10.1.0.0/16", "172.16.0.0/12"]


def test_max_eni_zero_or_negative_means_unset() -> None:
    assert load_config({"MAX_ENI": "-1"}).max_eni is None
    assert load_config({"MAX_ENI": "0"}).max_eni is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"WARM_ENI_TARGET": "one"}, "WARM_ENI_TARGET"),
        ({"WARM_ENI_TARGET": "-2"}, "WARM_ENI_TARGET"),
        ({"WARM_IP_TARGET": "-1"}, "WARM_IP_TARGET"),
        ({"IP_COOLDOWN_PERIOD": "soon"}, "IP_COOLDOWN_PERIOD"),
        ({"IP_COOLDOWN_PERIOD": "-3"}, "IP_COOLDOWN_PERIOD"),
        ({"AWS_VPC_ENI_MTU": "100"}, "AWS_VPC_ENI_MTU"),
        ({"AWS_VPC_ENI_MTU": "9002"}, "AWS_VPC_ENI_MTU"),
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "eth"}, "AWS_VPC_K8S_CNI_VETHPREFIX"),
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "toolong"}, "AWS_VPC_K8S_CNI_VETHPREFIX"),
        ({"AWS_VPC_K8S_CNI_EXTERNALSNAT": "maybe"}, "AWS_VPC_K8S_CNI_EXTERNALSNAT"),
        ({"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.0.0.0/33"}, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"),
        ({"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "0"}, "ENABLE_PREFIX_DELEGATION"),
        ({"VPCNET_MODE": "bgp"}, "VPCNET_MODE"),
        ({"AWS_EC2_ENDPOINT": "10.0.0.1:80"}, "AWS_EC2_ENDPOINT"),
        ({"INTROSPECTION_BIND_ADDRESS": "nowhere"}, "INTROSPECTION_BIND_ADDRESS"),
        ({"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(env)
