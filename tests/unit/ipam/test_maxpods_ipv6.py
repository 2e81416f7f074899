"""max-pods in IPv6 mode: prefix delegation is implied, the 110/250 cap applies, no IPv6 no number."""

from __future__ import annotations

import pytest

from vpcnet.ipam.limits import instance_limits
from vpcnet.ipam.maxpods import MaxPodsError, max_pods


def test_ipv6_mode_is_the_prefix_delegation_figure() -> None:
    for itype in ("m5.large", "t3.medium", "m5.24xlarge", "t3.nano"):
        lim = instance_limits(itype)
        assert max_pods(lim, ipv6=True) == max_pods(lim, prefix_delegation=True)
    assert max_pods(instance_limits("m5.large"), ipv6=True) == 110
    assert max_pods(instance_limits("m5.24xlarge"), ipv6=True) == 250


def test_ipv6_mode_needs_ipv6_and_nitro() -> None:
    with pytest.raises(MaxPodsError, match="IPv6"):
        max_pods(instance_limits("m1.small"), ipv6=True)
    with pytest.raises(MaxPodsError, match="Nitro"):
        max_pods(instance_limits("c4.large"), ipv6=True)


def test_ipv6_limits_come_from_the_table() -> None:
    assert instance_limits("m5.large").ipv6_per_eni == 10
    assert instance_limits("t2.micro").ipv6_per_eni == 2
    assert instance_limits("m1.small").ipv6_per_eni == 0
