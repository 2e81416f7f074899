"""The Calico agent's duration settings: a bad value names the variable; nan and inf are refused."""

from __future__ import annotations

import pytest

from vpcnet.agent.pool_ipam import _env_float


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "abc"])
def test_bad_durations_are_refused_naming_the_variable(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPCNET_IPAM_NODE_GRACE_SECONDS", raw)
    with pytest.raises(ValueError, match="VPCNET_IPAM_NODE_GRACE_SECONDS"):
        _env_float("VPCNET_IPAM_NODE_GRACE_SECONDS", 900.0)


def test_good_and_absent_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPCNET_ROUTE_RESYNC_SECONDS", "2.5")
    assert _env_float("VPCNET_ROUTE_RESYNC_SECONDS", 60.0) == 2.5
    monkeypatch.delenv("VPCNET_ROUTE_RESYNC_SECONDS")
    assert _env_float("VPCNET_ROUTE_RESYNC_SECONDS", 60.0) == 60.0
