"""Agent configuration from the environment, with the VPC CNI's variable names where they mean the same.

This is the only place the agent reads its environment: components take their settings from `ctx.config`,
and /v1/ipamd-env-settings shows every field under its variable's name. Every bad value is a `ConfigError`
naming the variable, what it holds and what was expected; nothing starts then.
vpcnet's own settings use the VPCNET_ prefix; the default IPPool's use Calico's CALICO_IPV4POOL_* names.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.settings import (
    DEFAULT_ENDPOINT,
    DatastoreSettings,
    DatastoreSettingsError,
    DatastoreType,
    EtcdTls,
    read_datastore_settings,
)

if TYPE_CHECKING:
    from vpcnet.dataplane.policy_backend import BackendName
    from vpcnet.dataplane.policy_state import FlowLogSpec

E = TypeVar("E", bound=enum.StrEnum)

DEFAULT_RUN_DIR = Path("/var/run/vpcnet")
RESERVED_VETH_PREFIXES = ("eth", "lo", "vlan")


class ConfigError(ValueError):
    """A setting is invalid; the message names the environment variable."""


class Mode(enum.StrEnum):
    VPC = "vpc"  # addresses from ENIs (the VPC CNI design)
    CALICO = "calico"  # addresses from Calico-style pools (IP-in-IP across subnets)


class WarmMode(enum.StrEnum):
    STATIC = "static"  # the VPC CNI's knobs exactly (WARM_ENI_TARGET / WARM_IP_TARGET / ...)
    ADAPTIVE = "adaptive"  # free addresses sized from the recent arrival rate (knobs become floors)


@dataclass(frozen=True)
class AgentConfig:
    # --- the VPC CNI's knobs ---
    warm_eni_target: int = 1
    warm_ip_target: int = 0  # 0 = unset
    minimum_ip_target: int = 0  # 0 = unset
    warm_prefix_target: int = 1  # the VPC CNI manifest's default
    enable_prefix_delegation: bool = False
    enable_ipv4: bool = True  # the pods' family in VPC mode: exactly one of the two, as in the VPC CNI
    enable_ipv6: bool = False
    max_eni: int | None = None
    ip_cooldown_period: float = 30.0
    external_snat: bool = False
    exclude_snat_cidrs: tuple[IPv4Network, ...] = ()
    veth_prefix: str = "eni"
    eni_mtu: int = 9001
    custom_network_cfg: bool = False
    enable_pod_eni: bool = False  # security groups for pods: branch-ENI pods (the controller's annotation)
    pod_sg_enforcing_mode: str = "strict"  # strict | standard (dataplane/branchnet.py)
    # Custom networking reads the node's ENIConfig from the datastore, named by the node's annotation
    # ENI_CONFIG_ANNOTATION_DEF or label ENI_CONFIG_LABEL_DEF (empty: k8s.amazonaws.com/eniConfig), as the
    # VPC CNI does; or, given a file, from the file (ENI_CONFIG_NAME, else the zone's, else "default").
    eni_config_annotation_def: str = ""
    eni_config_label_def: str = ""
    eni_config_name: str = ""  # file mode: the ENIConfig to use
    eni_config_file: Path | None = None  # file mode: ENIConfig objects (YAML/JSON) when there is no API
    cluster_name: str = ""
    max_pods: int | None = None  # the node's max pods; None = the EKS AMI calculator's number
    metrics_port: int | None = 61678  # None = DISABLE_METRICS
    introspection_address: str | None = "127.0.0.1:61679"  # None = DISABLE_INTROSPECTION
    log_level: str = "INFO"
    log_file: Path | None = None
    # --- vpcnet's own ---
    mode: Mode = Mode.VPC
    warm_mode: WarmMode = WarmMode.STATIC
    ec2_endpoint: str | None = None  # None = the region's public endpoint
    imds_endpoint: str = "http://169.254.169.254"
    block_imds: bool = False  # pods may not reach IMDS (the pod fence; EKS's guidance for node credentials)
    region: str | None = None  # None = from IMDS
    agent_socket: Path = DEFAULT_RUN_DIR / "agent.sock"
    checkpoint_path: Path = DEFAULT_RUN_DIR / "ipam.json"
    datastore_type: DatastoreType = DatastoreType.ETCD
    datastore_endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)  # etcd's
    # TLS to etcd: the CA to trust, this node's client certificate and key (None: not set)
    datastore_ca_cert_file: Path | None = None
    datastore_cert_file: Path | None = None
    datastore_key_file: Path | None = None
    kubeconfig: Path | None = None  # the Kubernetes datastore's API; None = in-cluster (or etcd)
    kube_context: str | None = None  # a kubeconfig context other than its current one
    ec2_rate_limit: float = 10.0  # EC2 requests per second this agent allows itself (burst = 2x)
    ec2_max_attempts: int = 8
    leaked_eni_grace: float = 300.0  # our ENIs left unattached this long are deleted
    release_delay: float = 60.0  # a surplus must last this long before addresses are given back
    pool_interval: float = 5.0  # the warm-pool loop's period (it also wakes on every assign/release)
    reconcile_interval: float = 60.0
    adaptive_window: float = 3600.0  # arrival history the adaptive mode sizes the pool from
    assign_wait: float = 30.0  # how long an assignment may wait for EC2 when the pool is empty
    node_name: str = ""
    # --- the policy component (vpcnet/agent/policy.py) ---
    policy_backend: BackendName = "iptables"
    policy_resync_interval: float = 90.0  # the applier re-reads the kernel and repairs hand edits this often
    # --- flow logs (vpcnet/agent/flow_logs.py): off | denied (every denied packet) | all (and allowed
    # connections, sampled at flow_log_allow_rate per second per rule)
    flow_logs: str = "denied"
    flow_log_group: int = 20  # the NFLOG group the verdict points log to
    flow_log_allow_rate: int = 100
    flow_log_window: float = 5.0  # seconds of packets aggregated into one record per flow
    flow_log_file: Path | None = None  # None: flows.jsonl beside the agent socket
    flow_log_max_bytes: int = 10 * 1024 * 1024  # one file's size before it is rotated
    flow_log_files: int = 5  # rotated files kept (flows.jsonl.1 ... .N)
    # allowed flows gain their connection's counters from conntrack (with flow_logs == all); the agent
    # sets net.netfilter.nf_conntrack_acct=1 in its namespace for it
    flow_log_conntrack: bool = True
    # --- Calico mode (vpcnet/agent/pool_ipam.py) ---
    ipam_node_grace: float = 900.0  # a node gone this long loses its blocks (Calico's LeakGracePeriod)
    ipam_node_ttl: float = 15.0  # the node record's lease (at least 5 s is used)
    route_resync_interval: float = 60.0  # the pool route sync's full re-read (at least 1 s is used)
    source_dest_check: bool = False  # True: leave the primary ENI's source/dest check as it is
    # the IPPool the first agent creates when there is none, as calico-node does
    default_pool_cidr: str = "10.244.0.0/16"
    default_pool_block_size: int = 26
    default_pool_vxlan_mode: str = "CrossSubnet"  # this kernel family often has VXLAN but no ipip module
    default_pool_ipip_mode: str = "Never"
    default_pool_nat_outgoing: bool = True
    # the IPv6 pool created beside it when IPv6 is on (ENABLE_IPv6), from Calico's CALICO_IPV6POOL_* names
    default_pool6_cidr: str = "fd00:10:244::/64"
    default_pool6_block_size: int = 122
    default_pool6_vxlan_mode: str = "CrossSubnet"
    default_pool6_nat_outgoing: bool = False  # Calico's default for IPv6 pools

    def env_settings(self) -> dict[str, Any]:
        """The settings as JSON-able values under the environment variables they come from, as the VPC CNI's
        /v1/ipamd-env-settings keys them (WARM_ENI_TARGET, AWS_VPC_ENI_MTU, ...)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = [str(x) for x in v]
            elif isinstance(v, enum.Enum):
                v = v.value
            out[ENV_NAMES.get(k, k)] = v
        return out

    def flow_log_spec(self) -> FlowLogSpec | None:
        """What the policy layout logs to the flow log component (None: flow logs off)."""
        from vpcnet.dataplane.policy_state import FlowLogSpec

        if self.flow_logs == "off":
            return None
        return FlowLogSpec(
            "all" if self.flow_logs == "all" else "denied", self.flow_log_group, self.flow_log_allow_rate
        )

    def datastore_settings(self) -> DatastoreSettings:
        """What vpcnet.datastore.open.open_store needs."""
        kube = None
        if self.datastore_type is DatastoreType.KUBERNETES:
            kube = KubeSettings(self.kubeconfig, self.kube_context)
        files = (self.datastore_ca_cert_file, self.datastore_cert_file, self.datastore_key_file)
        tls = EtcdTls(*files) if any(f is not None for f in files) else None
        return DatastoreSettings(
            type=self.datastore_type, endpoints=self.datastore_endpoints, kube=kube, tls=tls
        )


# AgentConfig field -> the environment variable load_config reads it from
ENV_NAMES = {
    "warm_eni_target": "WARM_ENI_TARGET",
    "warm_ip_target": "WARM_IP_TARGET",
    "minimum_ip_target": "MINIMUM_IP_TARGET",
    "warm_prefix_target": "WARM_PREFIX_TARGET",
    "enable_prefix_delegation": "ENABLE_PREFIX_DELEGATION",
    "enable_ipv4": "ENABLE_IPv4",
    "enable_ipv6": "ENABLE_IPv6",
    "max_eni": "MAX_ENI",
    "ip_cooldown_period": "IP_COOLDOWN_PERIOD",
    "external_snat": "AWS_VPC_K8S_CNI_EXTERNALSNAT",
    "exclude_snat_cidrs": "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
    "veth_prefix": "AWS_VPC_K8S_CNI_VETHPREFIX",
    "eni_mtu": "AWS_VPC_ENI_MTU",
    "custom_network_cfg": "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG",
    "enable_pod_eni": "ENABLE_POD_ENI",
    "pod_sg_enforcing_mode": "POD_SECURITY_GROUP_ENFORCING_MODE",
    "eni_config_annotation_def": "ENI_CONFIG_ANNOTATION_DEF",
    "eni_config_label_def": "ENI_CONFIG_LABEL_DEF",
    "eni_config_name": "ENI_CONFIG_NAME",
    "eni_config_file": "VPCNET_ENI_CONFIG_FILE",
    "cluster_name": "CLUSTER_NAME",
    "max_pods": "VPCNET_MAX_PODS",
    "metrics_port": "VPCNET_METRICS_PORT",
    "introspection_address": "INTROSPECTION_BIND_ADDRESS",
    "log_level": "AWS_VPC_K8S_CNI_LOGLEVEL",
    "log_file": "AWS_VPC_K8S_CNI_LOG_FILE",
    "mode": "VPCNET_MODE",
    "warm_mode": "VPCNET_WARM_MODE",
    "ec2_endpoint": "AWS_EC2_ENDPOINT",
    "imds_endpoint": "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "block_imds": "VPCNET_BLOCK_IMDS",
    "region": "AWS_REGION",
    "agent_socket": "VPCNET_AGENT_SOCKET",
    "checkpoint_path": "AWS_VPC_K8S_CNI_BACKING_STORE",
    "datastore_type": "VPCNET_DATASTORE_TYPE",
    "datastore_endpoints": "VPCNET_DATASTORE_ENDPOINTS",  # or the deprecated VPCNET_ETCD_ENDPOINTS
    "datastore_ca_cert_file": "VPCNET_DATASTORE_CA_CERT_FILE",
    "datastore_cert_file": "VPCNET_DATASTORE_CERT_FILE",
    "datastore_key_file": "VPCNET_DATASTORE_KEY_FILE",
    "kubeconfig": "KUBECONFIG",  # unset in a pod: the service account (in-cluster)
    "kube_context": "VPCNET_KUBE_CONTEXT",
    "ec2_rate_limit": "VPCNET_EC2_RATE_LIMIT",
    "ec2_max_attempts": "VPCNET_EC2_MAX_ATTEMPTS",
    "leaked_eni_grace": "VPCNET_LEAKED_ENI_GRACE",
    "release_delay": "VPCNET_RELEASE_DELAY",
    "pool_interval": "VPCNET_POOL_INTERVAL",
    "reconcile_interval": "VPCNET_RECONCILE_INTERVAL",
    "adaptive_window": "VPCNET_ADAPTIVE_WINDOW",
    "assign_wait": "VPCNET_ASSIGN_WAIT",
    "node_name": "VPCNET_NODE_NAME",
    "policy_backend": "VPCNET_POLICY_BACKEND",
    "policy_resync_interval": "VPCNET_POLICY_RESYNC_SECONDS",
    "flow_logs": "VPCNET_FLOW_LOGS",
    "flow_log_group": "VPCNET_FLOW_LOGS_GROUP",
    "flow_log_allow_rate": "VPCNET_FLOW_LOGS_ALLOW_RATE",
    "flow_log_window": "VPCNET_FLOW_LOGS_WINDOW_SECONDS",
    "flow_log_file": "VPCNET_FLOW_LOGS_FILE",
    "flow_log_max_bytes": "VPCNET_FLOW_LOGS_MAX_BYTES",
    "flow_log_files": "VPCNET_FLOW_LOGS_FILES",
    "flow_log_conntrack": "VPCNET_FLOW_LOGS_CONNTRACK",
    "ipam_node_grace": "VPCNET_IPAM_NODE_GRACE_SECONDS",
    "ipam_node_ttl": "VPCNET_IPAM_NODE_TTL_SECONDS",
    "route_resync_interval": "VPCNET_ROUTE_RESYNC_SECONDS",
    "source_dest_check": "VPCNET_SOURCE_DEST_CHECK",
    "default_pool_cidr": "CALICO_IPV4POOL_CIDR",
    "default_pool_block_size": "CALICO_IPV4POOL_BLOCK_SIZE",
    "default_pool_vxlan_mode": "CALICO_IPV4POOL_VXLAN",
    "default_pool_ipip_mode": "CALICO_IPV4POOL_IPIP",
    "default_pool_nat_outgoing": "CALICO_IPV4POOL_NAT_OUTGOING",
    "default_pool6_cidr": "CALICO_IPV6POOL_CIDR",
    "default_pool6_block_size": "CALICO_IPV6POOL_BLOCK_SIZE",
    "default_pool6_vxlan_mode": "CALICO_IPV6POOL_VXLAN",
    "default_pool6_nat_outgoing": "CALICO_IPV6POOL_NAT_OUTGOING",
}


@dataclass
class _Env:
    env: Mapping[str, str]
    used: list[str] = field(default_factory=list)

    def raw(self, name: str) -> str | None:
        v = self.env.get(name)
        if v is None or v.strip() == "":
            return None
        self.used.append(name)
        return v.strip()

    def int(self, name: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
        v = self.raw(name)
        if v is None:
            return default
        try:
            n = int(v, 10)
        except ValueError:
            raise ConfigError(f"{name}={v!r}: expected an integer") from None
        if lo is not None and n < lo:
            raise ConfigError(f"{name}={v!r}: must be at least {lo}")
        if hi is not None and n > hi:
            raise ConfigError(f"{name}={v!r}: must be at most {hi}")
        return n

    def float(self, name: str, default: float, *, lo: float = 0.0, above: bool = False) -> float:
        """A finite number >= lo (> lo when `above`); nan and inf are refused (they would mean never)."""
        v = self.raw(name)
        if v is None:
            return default
        try:
            x = float(v)
        except ValueError:
            raise ConfigError(f"{name}={v!r}: expected a number of seconds") from None
        if not (x > lo if above else x >= lo) or x == float("inf"):
            raise ConfigError(f"{name}={v!r}: must be a finite number {'>' if above else '>='} {lo:g}")
        return x

    def bool(self, name: str, default: bool) -> bool:
        v = self.raw(name)
        if v is None:
            return default
        low = v.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}={v!r}: expected true or false")

    def one_of(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        v = self.raw(name)
        if v is None:
            return default
        if v not in allowed:
            raise ConfigError(f"{name}={v!r}: expected one of {', '.join(allowed)}")
        return v

    def choice(self, name: str, enum_type: type[E], default: E) -> E:
        v = self.raw(name)
        if v is None:
            return default
        try:
            return enum_type(v.lower())
        except ValueError:
            allowed = ", ".join(m.value for m in enum_type)
            raise ConfigError(f"{name}={v!r}: expected one of {allowed}") from None


def _cidrs(name: str, value: str | None) -> tuple[IPv4Network, ...]:
    if value is None:
        return ()
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(IPv4Network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IPv4 CIDR") from None
    return tuple(out)


def _label_key(name: str, value: str | None) -> str:
    """A node label or annotation key (empty: the default); a bad one would never match, so it is refused."""
    from vpcnet.api.fields import label_key_problem

    key = (value or "").strip()
    if key and (problem := label_key_problem(key)):
        raise ConfigError(f"{name}={value!r}: {problem}")
    return key


def _address(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if value.startswith("unix:"):
        return value
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{name}={value!r}: expected HOST:PORT or unix:PATH")
    return value


def _url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={value!r}: expected an http:// or https:// URL")
    return value.rstrip("/")


def load_config(env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the configuration from env (default os.environ); raises ConfigError naming the bad variable."""
    e = _Env(os.environ if env is None else env)
    cfg: dict[str, Any] = {}

    warm_eni = e.int("WARM_ENI_TARGET", 1)
    if warm_eni < 0:
        raise ConfigError(f"WARM_ENI_TARGET={warm_eni}: must be 0 or more")
    cfg["warm_eni_target"] = warm_eni
    cfg["warm_ip_target"] = e.int("WARM_IP_TARGET", 0, lo=0)
    cfg["minimum_ip_target"] = e.int("MINIMUM_IP_TARGET", 0, lo=0)
    cfg["warm_prefix_target"] = e.int("WARM_PREFIX_TARGET", 1, lo=0)
    cfg["enable_prefix_delegation"] = e.bool("ENABLE_PREFIX_DELEGATION", False)
    max_eni = e.int("MAX_ENI", -1)
    cfg["max_eni"] = max_eni if max_eni > 0 else None
    cfg["ip_cooldown_period"] = e.float("IP_COOLDOWN_PERIOD", 30.0)
    cfg["external_snat"] = e.bool("AWS_VPC_K8S_CNI_EXTERNALSNAT", False)
    cfg["exclude_snat_cidrs"] = _cidrs(
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", e.raw("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")
    )
    # Calico names its host veths cali*, the VPC CNI eni*; policy dispatch keys on the prefix.
    mode_default_prefix = "cali" if e.raw("VPCNET_MODE") == "calico" else "eni"
    prefix = e.raw("AWS_VPC_K8S_CNI_VETHPREFIX") or mode_default_prefix
    if len(prefix) > 4 or not prefix.isalnum() or prefix in RESERVED_VETH_PREFIXES:
        raise ConfigError(
            f"AWS_VPC_K8S_CNI_VETHPREFIX={prefix!r}: expected 1-4 letters or digits, not eth, lo or vlan"
        )
    cfg["veth_prefix"] = prefix
    cfg["eni_mtu"] = e.int("AWS_VPC_ENI_MTU", 9001, lo=576, hi=9001)
    cfg["custom_network_cfg"] = e.bool("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", False)
    cfg["enable_pod_eni"] = e.bool("ENABLE_POD_ENI", False)
    enforcing = (e.raw("POD_SECURITY_GROUP_ENFORCING_MODE") or "strict").strip().lower()
    if enforcing not in ("strict", "standard"):
        raise ConfigError(f"POD_SECURITY_GROUP_ENFORCING_MODE={enforcing!r}: expected strict or standard")
    cfg["pod_sg_enforcing_mode"] = enforcing
    cfg["eni_config_annotation_def"] = _label_key(
        "ENI_CONFIG_ANNOTATION_DEF", e.raw("ENI_CONFIG_ANNOTATION_DEF")
    )
    cfg["eni_config_label_def"] = _label_key("ENI_CONFIG_LABEL_DEF", e.raw("ENI_CONFIG_LABEL_DEF"))
    cfg["eni_config_name"] = e.raw("ENI_CONFIG_NAME") or ""
    eni_file = e.raw("VPCNET_ENI_CONFIG_FILE")
    cfg["eni_config_file"] = Path(eni_file) if eni_file else None
    cfg["cluster_name"] = e.raw("CLUSTER_NAME") or ""
    max_pods = e.int("VPCNET_MAX_PODS", 0, lo=0)
    cfg["max_pods"] = max_pods or None
    cfg["metrics_port"] = (
        None if e.bool("DISABLE_METRICS", False) else e.int("VPCNET_METRICS_PORT", 61678, lo=1, hi=65535)
    )
    cfg["introspection_address"] = (
        None
        if e.bool("DISABLE_INTROSPECTION", False)
        else _address("INTROSPECTION_BIND_ADDRESS", e.raw("INTROSPECTION_BIND_ADDRESS") or "127.0.0.1:61679")
    )
    level = (e.raw("AWS_VPC_K8S_CNI_LOGLEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR"):
        raise ConfigError(f"AWS_VPC_K8S_CNI_LOGLEVEL={level!r}: expected DEBUG, INFO, WARN or ERROR")
    cfg["log_level"] = "WARNING" if level == "WARN" else level
    log_file = e.raw("AWS_VPC_K8S_CNI_LOG_FILE")
    cfg["log_file"] = None if log_file in (None, "stderr", "stdout") else Path(str(log_file))

    cfg["mode"] = e.choice("VPCNET_MODE", Mode, Mode.VPC)
    cfg["warm_mode"] = e.choice("VPCNET_WARM_MODE", WarmMode, WarmMode.STATIC)
    cfg["ec2_endpoint"] = _url("AWS_EC2_ENDPOINT", e.raw("AWS_EC2_ENDPOINT")) or _url(
        "VPCNET_EC2_ENDPOINT", e.raw("VPCNET_EC2_ENDPOINT")
    )
    cfg["imds_endpoint"] = (
        _url("AWS_EC2_METADATA_SERVICE_ENDPOINT", e.raw("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
        or "http://169.254.169.254"
    )
    cfg["block_imds"] = e.bool("VPCNET_BLOCK_IMDS", False)
    cfg["region"] = e.raw("AWS_REGION") or e.raw("AWS_DEFAULT_REGION")
    sock = e.raw("VPCNET_AGENT_SOCKET")
    cfg["agent_socket"] = Path(sock) if sock else DEFAULT_RUN_DIR / "agent.sock"
    store = e.raw("AWS_VPC_K8S_CNI_BACKING_STORE")
    cfg["checkpoint_path"] = Path(store) if store else DEFAULT_RUN_DIR / "ipam.json"
    try:
        datastore = read_datastore_settings(e.env)
    except DatastoreSettingsError as exc:
        raise ConfigError(str(exc)) from None
    cfg["datastore_type"] = datastore.type
    cfg["datastore_endpoints"] = datastore.endpoints
    if datastore.tls is not None:
        cfg["datastore_ca_cert_file"] = datastore.tls.ca_file
        cfg["datastore_cert_file"] = datastore.tls.cert_file
        cfg["datastore_key_file"] = datastore.tls.key_file
    if datastore.kube is not None:
        cfg["kubeconfig"] = datastore.kube.kubeconfig
        cfg["kube_context"] = datastore.kube.context
    rate = e.float("VPCNET_EC2_RATE_LIMIT", 10.0)
    if rate <= 0:
        raise ConfigError(f"VPCNET_EC2_RATE_LIMIT={rate}: must be more than 0")
    cfg["ec2_rate_limit"] = rate
    cfg["ec2_max_attempts"] = e.int("VPCNET_EC2_MAX_ATTEMPTS", 8, lo=1, hi=50)
    cfg["leaked_eni_grace"] = e.float("VPCNET_LEAKED_ENI_GRACE", 300.0)
    cfg["release_delay"] = e.float("VPCNET_RELEASE_DELAY", 60.0)
    cfg["pool_interval"] = e.float("VPCNET_POOL_INTERVAL", 5.0, lo=0.05)
    cfg["reconcile_interval"] = e.float("VPCNET_RECONCILE_INTERVAL", 60.0, lo=1.0)
    cfg["adaptive_window"] = e.float("VPCNET_ADAPTIVE_WINDOW", 3600.0, lo=1.0)
    cfg["assign_wait"] = e.float("VPCNET_ASSIGN_WAIT", 30.0)
    cfg["node_name"] = e.raw("VPCNET_NODE_NAME") or e.raw("MY_NODE_NAME") or ""
    cfg.update(_policy_settings(e))
    cfg.update(_flow_log_settings(e))
    cfg.update(_calico_settings(e))
    cfg.update(_family_settings(e, cfg))

    if cfg["enable_prefix_delegation"] and not (
        cfg["warm_prefix_target"] or cfg["warm_ip_target"] or cfg["minimum_ip_target"]
    ):
        raise ConfigError(
            "ENABLE_PREFIX_DELEGATION=true needs WARM_PREFIX_TARGET, WARM_IP_TARGET or MINIMUM_IP_TARGET"
            " above 0"
        )
    return AgentConfig(**cfg)


def _family_settings(e: _Env, cfg: dict[str, Any]) -> dict[str, Any]:
    """ENABLE_IPv4 / ENABLE_IPv6: the pods' families. VPC mode, with the VPC CNI's rules: exactly one (no
    dual-stack pods), and IPv6 needs prefix delegation (a /80 on the primary ENI). Calico mode: either or
    both (dual stack: Calico's CNI assign_ipv4/assign_ipv6); FELIX_IPV6SUPPORT, Calico's own switch,
    is read when ENABLE_IPv6 is not set, and may not contradict it when both are."""
    if cfg["mode"] is Mode.CALICO:
        return _calico_families(e)
    v4, v6 = e.bool("ENABLE_IPv4", True), e.bool("ENABLE_IPv6", False)
    if v4 == v6:
        raise ConfigError(
            f"ENABLE_IPv4={str(v4).lower()} and ENABLE_IPv6={str(v6).lower()}: exactly one must be true"
        )
    if v6:
        if cfg["mode"] is not Mode.VPC:
            raise ConfigError("ENABLE_IPv6=true is a VPC-mode setting (VPCNET_MODE=vpc)")
        if not cfg["enable_prefix_delegation"]:
            raise ConfigError(
                "ENABLE_IPv6=true needs ENABLE_PREFIX_DELEGATION=true (pods get a /80's addresses)"
            )
    return {"enable_ipv4": v4, "enable_ipv6": v6}


def _calico_families(e: _Env) -> dict[str, Any]:
    v4 = e.bool("ENABLE_IPv4", True)
    felix = e.raw("FELIX_IPV6SUPPORT")
    felix_v6 = e.bool("FELIX_IPV6SUPPORT", False) if felix is not None else None
    v6 = e.bool("ENABLE_IPv6", felix_v6 or False)
    if felix_v6 is not None and e.raw("ENABLE_IPv6") is not None and felix_v6 != v6:
        raise ConfigError(
            f"ENABLE_IPv6={str(v6).lower()} and FELIX_IPV6SUPPORT={str(felix_v6).lower()} disagree"
        )
    if not (v4 or v6):
        raise ConfigError("ENABLE_IPv4=false and ENABLE_IPv6=false: pods need at least one family")
    return {"enable_ipv4": v4, "enable_ipv6": v6}


def _policy_settings(e: _Env) -> dict[str, Any]:
    from vpcnet.dataplane.policy_backend import BACKENDS  # the renderers stay unloaded until needed

    return {
        "policy_backend": e.one_of("VPCNET_POLICY_BACKEND", BACKENDS, "iptables"),
        "policy_resync_interval": e.float("VPCNET_POLICY_RESYNC_SECONDS", 90.0, above=True),
    }


def _flow_log_settings(e: _Env) -> dict[str, Any]:
    path = e.raw("VPCNET_FLOW_LOGS_FILE")
    return {
        "flow_logs": e.one_of("VPCNET_FLOW_LOGS", ("off", "denied", "all"), "denied"),
        "flow_log_group": e.int("VPCNET_FLOW_LOGS_GROUP", 20, lo=1, hi=65535),
        "flow_log_allow_rate": e.int("VPCNET_FLOW_LOGS_ALLOW_RATE", 100, lo=0, hi=10000),
        "flow_log_window": e.float("VPCNET_FLOW_LOGS_WINDOW_SECONDS", 5.0, lo=0.1),
        "flow_log_file": Path(path) if path else None,
        "flow_log_max_bytes": e.int("VPCNET_FLOW_LOGS_MAX_BYTES", 10 * 1024 * 1024, lo=4096),
        "flow_log_files": e.int("VPCNET_FLOW_LOGS_FILES", 5, lo=1, hi=100),
        "flow_log_conntrack": e.bool("VPCNET_FLOW_LOGS_CONNTRACK", True),
    }


def _calico_settings(e: _Env) -> dict[str, Any]:
    """Calico mode's settings; the default IPPool's fields are checked as a whole (vpcnet.api) when the
    pool is built, as today; here only their types."""
    return {
        "ipam_node_grace": e.float("VPCNET_IPAM_NODE_GRACE_SECONDS", 900.0),
        "ipam_node_ttl": e.float("VPCNET_IPAM_NODE_TTL_SECONDS", 15.0),
        "route_resync_interval": e.float("VPCNET_ROUTE_RESYNC_SECONDS", 60.0),
        "source_dest_check": e.bool("VPCNET_SOURCE_DEST_CHECK", False),
        "default_pool_cidr": e.raw("CALICO_IPV4POOL_CIDR") or "10.244.0.0/16",
        "default_pool_block_size": e.int("CALICO_IPV4POOL_BLOCK_SIZE", 26, lo=0),
        "default_pool_vxlan_mode": e.raw("CALICO_IPV4POOL_VXLAN") or "CrossSubnet",
        "default_pool_ipip_mode": e.raw("CALICO_IPV4POOL_IPIP") or "Never",
        "default_pool_nat_outgoing": e.bool("CALICO_IPV4POOL_NAT_OUTGOING", True),
        "default_pool6_cidr": e.raw("CALICO_IPV6POOL_CIDR") or "fd00:10:244::/64",
        "default_pool6_block_size": e.int("CALICO_IPV6POOL_BLOCK_SIZE", 122, lo=0),
        "default_pool6_vxlan_mode": e.raw("CALICO_IPV6POOL_VXLAN") or "CrossSubnet",
        "default_pool6_nat_outgoing": e.bool("CALICO_IPV6POOL_NAT_OUTGOING", False),
    }
