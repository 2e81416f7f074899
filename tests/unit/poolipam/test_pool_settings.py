"""The Calico agent's settings (read in vpcnet/agent/config.py): a bad value names the variable; nan and
inf are refused."""

from __future__ import annotations

import pytest

from vpcnet.agent.config import AgentConfig, ConfigError, load_config
from vpcnet.agent.pool_ipam import PoolIpamComponent


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "abc"])
@pytest.mark.parametrize(
    "name", ["VPCNET_IPAM_NODE_GRACE_SECONDS", "VPCNET_IPAM_NODE_TTL_SECONDS", "VPCNET_ROUTE_RESYNC_SECONDS"]
)
def test_bad_durations_are_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}='{raw}'"):
        load_config({name: raw})


def test_good_and_absent_durations() -> None:
    assert load_config({"VPCNET_ROUTE_RESYNC_SECONDS": "2.5"}).route_resync_interval == 2.5
    c = load_config({})
    assert (c.route_resync_interval, c.ipam_node_grace, c.ipam_node_ttl) == (60.0, 900.0, 15.0)
    assert not c.source_dest_check


def test_the_component_takes_its_settings_from_the_config() -> None:
    from types import SimpleNamespace

    cfg = load_config(
        {"VPCNET_IPAM_NODE_GRACE_SECONDS": "6", "VPCNET_IPAM_NODE_TTL_SECONDS": "2",
         "VPCNET_ROUTE_RESYNC_SECONDS": "0.5", "VPCNET_SOURCE_DEST_CHECK": "true"}
    )  # fmt: skip
    assert isinstance(cfg, AgentConfig)
    component = PoolIpamComponent(SimpleNamespace(config=cfg))  # type: ignore[arg-type]
    # the lease and the resync have floors (a shorter lease would expire between keep-alives)
    assert (component.grace, component.ttl, component.resync, component.keep_sdc) == (6.0, 5, 1.0, True)


@pytest.mark.parametrize("raw", ["maybe", "2"])
def test_a_bad_source_dest_check_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="VPCNET_SOURCE_DEST_CHECK"):
        load_config({"VPCNET_SOURCE_DEST_CHECK": raw})
