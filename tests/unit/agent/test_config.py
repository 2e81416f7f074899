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
    assert c.env_settings()["AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"] == ["10.1.0.0/16", "172.16.0.0/12"]


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


def test_env_settings_are_keyed_by_the_variables_and_read_back_the_same() -> None:
    """/v1/ipamd-env-settings as the VPC CNI keys it; feeding it back as the environment gives the same
    configuration (so every key really is the variable load_config reads)."""
    env = {
        "WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "3", "MINIMUM_IP_TARGET": "9", "WARM_PREFIX_TARGET": "2",
        "ENABLE_PREFIX_DELEGATION": "true", "MAX_ENI": "2", "IP_COOLDOWN_PERIOD": "7.5",
        "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.9.0.0/16",
        "AWS_VPC_K8S_CNI_VETHPREFIX": "abc", "AWS_VPC_ENI_MTU": "1500", "ENI_CONFIG_NAME": "cfg",
        "CLUSTER_NAME": "c1", "VPCNET_MAX_PODS": "40", "VPCNET_METRICS_PORT": "9100",
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:9101", "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
        "AWS_VPC_K8S_CNI_LOG_FILE": "/tmp/a.log", "VPCNET_WARM_MODE": "adaptive",
        "AWS_EC2_ENDPOINT": "http://127.0.0.1:1", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:2",
        "AWS_REGION": "eu-west-1", "VPCNET_AGENT_SOCKET": "/tmp/a.sock",
        "AWS_VPC_K8S_CNI_BACKING_STORE": "/tmp/c",
        "VPCNET_DATASTORE_ENDPOINTS": "http://127.0.0.1:3", "VPCNET_EC2_RATE_LIMIT": "3",
        "VPCNET_EC2_MAX_ATTEMPTS": "4", "VPCNET_LEAKED_ENI_GRACE": "50", "VPCNET_RELEASE_DELAY": "20",
        "VPCNET_POOL_INTERVAL": "2", "VPCNET_RECONCILE_INTERVAL": "30", "VPCNET_ADAPTIVE_WINDOW": "600",
        "VPCNET_ASSIGN_WAIT": "9", "VPCNET_NODE_NAME": "n1",
    }  # fmt: skip
    c = load_config(env)
    doc = c.env_settings()
    assert (doc["WARM_ENI_TARGET"], doc["WARM_IP_TARGET"], doc["AWS_VPC_ENI_MTU"]) == (0, 3, 1500)
    assert not [k for k in doc if k != k.upper()]  # every field has its variable's name

    def as_env(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return ",".join(v) if isinstance(v, list) else str(v)

    again = {k: as_env(v) for k, v in doc.items() if v is not None}
    assert load_config(again) == c
