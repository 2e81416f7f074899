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
        ({"VPCNET_FLOW_LOGS_CONNTRACK": "sometimes"}, "VPCNET_FLOW_LOGS_CONNTRACK"),
        ({"ENI_CONFIG_LABEL_DEF": "topology zone"}, "ENI_CONFIG_LABEL_DEF"),
        ({"ENI_CONFIG_ANNOTATION_DEF": "/eniConfig"}, "ENI_CONFIG_ANNOTATION_DEF"),
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
        "ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone", "ENI_CONFIG_ANNOTATION_DEF": "example.com/eni",
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
        "VPCNET_DATASTORE_TYPE": "etcd", "VPCNET_POLICY_BACKEND": "nftables",
        "VPCNET_POLICY_RESYNC_SECONDS": "12", "VPCNET_IPAM_NODE_GRACE_SECONDS": "60",
        "VPCNET_IPAM_NODE_TTL_SECONDS": "30", "VPCNET_ROUTE_RESYNC_SECONDS": "5",
        "VPCNET_SOURCE_DEST_CHECK": "true", "CALICO_IPV4POOL_CIDR": "172.20.0.0/16",
        "CALICO_IPV4POOL_BLOCK_SIZE": "28", "CALICO_IPV4POOL_VXLAN": "Always",
        "CALICO_IPV4POOL_IPIP": "Never", "CALICO_IPV4POOL_NAT_OUTGOING": "false",
    }  # fmt: skip
    c = load_config(env)
    doc = c.env_settings()
    assert (doc["WARM_ENI_TARGET"], doc["WARM_IP_TARGET"], doc["AWS_VPC_ENI_MTU"]) == (0, 3, 1500)
    # every field has its variable's name (the VPC CNI spells ENABLE_IPv4/ENABLE_IPv6 in mixed case)
    assert not [k for k in doc if k != k.upper() and k not in ("ENABLE_IPv4", "ENABLE_IPv6")]

    def as_env(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return ",".join(v) if isinstance(v, list) else str(v)

    again = {k: as_env(v) for k, v in doc.items() if v is not None}
    assert load_config(again) == c
    # every variable given was read into a field that differs from its default (none is ignored)
    defaults = load_config({}).env_settings()
    unchanged = [k for k in env if k in doc and doc[k] == defaults[k]]
    assert unchanged == ["VPCNET_DATASTORE_TYPE", "CALICO_IPV4POOL_IPIP"]  # etcd and Never are all there is
    assert set(env) <= set(doc)


def test_datastore_settings_canonical_and_deprecated_names(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from vpcnet.datastore.settings import DatastoreSettings, DatastoreType

    assert load_config({}).datastore_settings() == DatastoreSettings(
        DatastoreType.ETCD, ("http://127.0.0.1:2379",)
    )
    c = load_config({"VPCNET_DATASTORE_ENDPOINTS": "http://10.0.0.1:2379,10.0.0.2"})
    assert c.datastore_endpoints == ("http://10.0.0.1:2379", "10.0.0.2")
    assert c.env_settings()["VPCNET_DATASTORE_ENDPOINTS"] == ["http://10.0.0.1:2379", "10.0.0.2"]
    with caplog.at_level(logging.WARNING):
        c = load_config({"VPCNET_ETCD_ENDPOINTS": "http://10.0.0.3:2379"})
    assert c.datastore_endpoints == ("http://10.0.0.3:2379",)
    assert "VPCNET_ETCD_ENDPOINTS is deprecated: use VPCNET_DATASTORE_ENDPOINTS" in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VPCNET_DATASTORE_TYPE": "consul"},
            "VPCNET_DATASTORE_TYPE='consul': expected one of kubernetes, etcd",
        ),
        (
            {"VPCNET_DATASTORE_TYPE": "kubernetes", "KUBECONFIG": "/nonexistent/kc"},
            "VPCNET_DATASTORE_TYPE=kubernetes: KUBECONFIG='/nonexistent/kc': /nonexistent/kc is not",
        ),
        ({"VPCNET_DATASTORE_ENDPOINTS": "ftp://e:2379"}, "VPCNET_DATASTORE_ENDPOINTS: etcd endpoint"),
        ({"VPCNET_ETCD_ENDPOINTS": "e:x"}, "VPCNET_ETCD_ENDPOINTS: etcd endpoint 'e:x': bad port"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "x"}, "CALICO_IPV4POOL_BLOCK_SIZE='x': expected an integer"),
        ({"CALICO_IPV4POOL_NAT_OUTGOING": "maybe"}, "CALICO_IPV4POOL_NAT_OUTGOING='maybe'"),
    ],
)
def test_bad_datastore_and_pool_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_the_kubernetes_datastore_settings(tmp_path: Path) -> None:
    from vpcnet.datastore.kube_settings import KubeSettings
    from vpcnet.datastore.settings import DatastoreType

    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    env = {"VPCNET_DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kubeconfig), "VPCNET_KUBE_CONTEXT": "lab"}
    c = load_config(env)
    assert (c.datastore_type, c.kubeconfig, c.kube_context) == (DatastoreType.KUBERNETES, kubeconfig, "lab")
    assert c.datastore_settings().kube == KubeSettings(kubeconfig, "lab")
    shown = c.env_settings()
    assert (shown["VPCNET_DATASTORE_TYPE"], shown["KUBECONFIG"]) == ("kubernetes", str(kubeconfig))
    assert load_config({k: str(v) for k, v in shown.items() if v is not None and k in env}) == c
    # In a pod the default is the Kubernetes datastore, found through the service account.
    in_pod = load_config({"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert in_pod.datastore_type is DatastoreType.KUBERNETES and in_pod.kubeconfig is None
    assert in_pod.datastore_settings().kube == KubeSettings(None)
    assert load_config({}).datastore_type is DatastoreType.ETCD


def test_calico_mode_runs_over_either_datastore() -> None:
    from vpcnet.datastore.settings import DatastoreType

    in_pod = {"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = load_config({**in_pod, "VPCNET_MODE": "calico"})
    assert (cfg.mode.value, cfg.datastore_type) == ("calico", DatastoreType.KUBERNETES)
    cfg = load_config({**in_pod, "VPCNET_MODE": "calico", "VPCNET_DATASTORE_TYPE": "etcd"})
    assert (cfg.mode.value, cfg.datastore_type) == ("calico", DatastoreType.ETCD)


def test_the_readme_lists_every_variable() -> None:
    from vpcnet.agent.config import ENV_NAMES

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    missing = [name for name in ENV_NAMES.values() if f"`{name}`" not in readme]
    assert missing == []


def test_conntrack_counters_are_on_unless_turned_off() -> None:
    assert load_config({}).flow_log_conntrack is True
    assert load_config({"VPCNET_FLOW_LOGS_CONNTRACK": "off"}).flow_log_conntrack is False
