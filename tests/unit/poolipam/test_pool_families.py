"""Calico mode's families: ENABLE_IPv4/ENABLE_IPv6 (and FELIX_IPV6SUPPORT), the default IPv6 pool from
CALICO_IPV6POOL_*, the CNI result of a dual-stack pod, `lab up --ip-family` per mode, and the policy planes
per family (pure parts; the kernel side is in tests/root/ipv6/test_lab_calico_dual.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from vpcnet.agent.config import ConfigError, load_config
from vpcnet.agent.pool_ipam import default_pool_document, pod_versions
from vpcnet.api import ValidationError
from vpcnet.cli.lab import family_settings
from vpcnet.cni.spec import Interface, add_result

CALICO = {"VPCNET_MODE": "calico"}


def test_calico_families_either_or_both() -> None:
    assert pod_versions(load_config(CALICO)) == (4,)
    assert pod_versions(load_config(CALICO | {"ENABLE_IPv6": "true"})) == (4, 6)
    assert pod_versions(load_config(CALICO | {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false"})) == (6,)
    # Calico's own switch, when ENABLE_IPv6 is not given; no prefix delegation needed in Calico mode.
    assert pod_versions(load_config(CALICO | {"FELIX_IPV6SUPPORT": "true"})) == (4, 6)
    with pytest.raises(ConfigError, match="disagree"):
        load_config(CALICO | {"FELIX_IPV6SUPPORT": "false", "ENABLE_IPv6": "true"})
    with pytest.raises(ConfigError, match="at least one family"):
        load_config(CALICO | {"ENABLE_IPv4": "false"})
    with pytest.raises(ConfigError, match="exactly one"):  # VPC mode keeps the VPC CNI's rule
        load_config({"ENABLE_IPv6": "true", "ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"})


def test_default_ipv6_pool_from_calico_environment() -> None:
    doc = default_pool_document(load_config(CALICO | {"ENABLE_IPv6": "true"}), 6)
    assert doc["metadata"]["name"] == "default-ipv6-ippool"
    assert doc["spec"] == {
        "cidr": "fd00:10:244::/64",
        "blockSize": 122,
        "vxlanMode": "CrossSubnet",
        "natOutgoing": False,
    }
    env = CALICO | {"CALICO_IPV6POOL_CIDR": "fd00:99::/48", "CALICO_IPV6POOL_BLOCK_SIZE": "120"}
    assert default_pool_document(load_config(env), 6)["spec"]["blockSize"] == 120
    with pytest.raises(ValidationError, match=r"spec\.blockSize"):
        default_pool_document(load_config(CALICO | {"CALICO_IPV6POOL_BLOCK_SIZE": "26"}), 6)
    with pytest.raises(ValidationError, match="not an IPv6 CIDR"):
        wrong = {"CALICO_IPV6POOL_CIDR": "10.9.0.0/16", "CALICO_IPV6POOL_BLOCK_SIZE": "26"}
        default_pool_document(load_config(CALICO | wrong), 6)


def test_dual_stack_add_result_lists_both_families_ipv4_first() -> None:
    result = add_result(
        "1.0.0",
        [Interface("calia", "aa:aa:aa:aa:aa:aa"), Interface("eth0", "bb:bb:bb:bb:bb:bb", sandbox="/ns")],
        (IPv4Address("10.244.0.5"), IPv6Address("fd00::5")),
    )
    assert result["ips"] == [
        {"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1},
        {"address": "fd00::5/128", "gateway": "fe80::1", "interface": 1},
    ]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}]


def test_lab_ip_family_per_mode() -> None:
    assert family_settings("dual", {"VPCNET_MODE": "calico"}) == {
        "ENABLE_IPv6": "true",
        "ENABLE_IPv4": "true",
    }
    assert family_settings("ipv6", {"VPCNET_MODE": "calico"}) == {
        "ENABLE_IPv6": "true",
        "ENABLE_IPv4": "false",
    }
    assert family_settings("ipv6", {})["ENABLE_PREFIX_DELEGATION"] == "true"  # VPC mode: the VPC CNI's
    assert family_settings("dual", {}) == {} and family_settings("ipv4", {"VPCNET_MODE": "calico"}) == {}


def test_calico_policy_planes_follow_the_pods_families() -> None:
    from types import SimpleNamespace

    from vpcnet.agent.policy_family import planes_for
    from vpcnet.dataplane.family import IpFamily

    def planes(env: dict[str, str]) -> list[tuple[IpFamily, bool]]:
        ctx = SimpleNamespace(config=load_config(CALICO | env))
        return [(p.family, p.local_addresses is None) for p in planes_for(ctx)]  # type: ignore[arg-type]

    assert planes({}) == [(IpFamily.V4, True)]
    assert planes({"ENABLE_IPv6": "true"}) == [(IpFamily.V4, True), (IpFamily.V6, True)]
    # IPv6 only: an IPv4 plane with no local addresses keeps every pod's IPv4 closed.
    only6 = planes({"ENABLE_IPv6": "true", "ENABLE_IPv4": "false"})
    assert only6 == [(IpFamily.V6, True), (IpFamily.V4, False)]
