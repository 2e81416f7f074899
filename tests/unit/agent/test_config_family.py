"""ENABLE_IPv4 / ENABLE_IPv6 with the VPC CNI's rules, shown in /v1/ipamd-env-settings."""

from __future__ import annotations

import pytest

from vpcnet.agent.config import ConfigError, load_config


def test_ipv4_by_default_and_shown_under_the_vpc_cni_names() -> None:
    cfg = load_config({})
    assert cfg.enable_ipv4 and not cfg.enable_ipv6
    shown = cfg.env_settings()
    assert shown["ENABLE_IPv4"] is True and shown["ENABLE_IPv6"] is False


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ENABLE_IPv4": "false"}, "exactly one"),
        ({"ENABLE_IPv6": "true"}, "exactly one"),
        ({"ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}, "ENABLE_PREFIX_DELEGATION=true"),
        # Calico mode takes either family or both, but not neither.
        ({"ENABLE_IPv4": "false", "VPCNET_MODE": "calico"}, "at least one family"),
        ({"ENABLE_IPv6": "maybe"}, "ENABLE_IPv6"),
    ],
)
def test_bad_family_settings_are_named(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env)


def test_ipv6_mode_with_prefix_delegation_is_accepted() -> None:
    cfg = load_config({"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "ENABLE_PREFIX_DELEGATION": "true"})
    assert cfg.enable_ipv6 and not cfg.enable_ipv4 and cfg.enable_prefix_delegation
