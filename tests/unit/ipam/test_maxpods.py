from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vpcnet.cli.main import app
from vpcnet.ipam.limits import UnknownInstanceType, all_instance_types, instance_limits
from vpcnet.ipam.maxpods import MaxPodsError, max_pods


@pytest.mark.parametrize(
    ("itype", "kwargs", "expected"),
    [
        ("m5.large", {}, 29),
        ("t3.medium", {}, 17),
        ("t3.small", {}, 11),
        ("t3.nano", {}, 4),
        ("m5.large", {"prefix_delegation": True}, 110),
        ("m5.large", {"prefix_delegation": True, "cap": False}, 434),
        ("m5.24xlarge", {"prefix_delegation": True}, 250),
        ("m5.24xlarge", {}, 250),
        ("m5.24xlarge", {"cap": False}, 737),
        ("m5.large", {"custom_networking": True}, 20),
        ("m5.large", {"max_eni": 1}, 11),
        ("c5n.18xlarge", {"cap": False}, 737),
    ],
)
def test_formula_matches_the_eks_calculator(itype: str, kwargs: dict[str, object], expected: int) -> None:
    assert max_pods(instance_limits(itype), **kwargs) == expected  # type: ignore[arg-type]


def test_only_network_card_zero_counts() -> None:
    limits = instance_limits("p5.48xlarge")
    assert limits.max_enis > limits.enis_on_default_card
    assert max_pods(limits, cap=False) == limits.enis_on_default_card * (limits.ipv4_per_eni - 1) + 2


def test_prefix_delegation_needs_nitro() -> None:
    with pytest.raises(MaxPodsError, match="not a Nitro"):
        max_pods(instance_limits("m4.large"), prefix_delegation=True)


def test_every_type_in_the_table_has_an_answer() -> None:
    names = all_instance_types()
    assert len(names) > 1000
    for name in names:
        assert max_pods(instance_limits(name)) >= 3


def test_cli_prints_the_number_and_rejects_unknown_types() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["max-pods", "m5.large"])
    assert ok.exit_code == 0 and ok.stdout.strip() == "29"
    pd = runner.invoke(app, ["max-pods", "m5.large", "--prefix-delegation", "--no-cap"])
    assert pd.stdout.strip() == "434"
    bad = runner.invoke(app, ["max-pods", "m5.enormous"])
    assert bad.exit_code == 2
    assert "m5.enormous" in bad.output
    with pytest.raises(UnknownInstanceType):
        instance_limits("m5.enormous")


@pytest.mark.parametrize(
    ("itype", "kwargs", "expected"),
    [
        ("m5.large", {}, 2 * 9 + 2 + 9),  # the trunk's 9 addresses become 9 branches
        ("m5.24xlarge", {"cap": False}, 14 * 49 + 2 + 107),
        ("m5.large", {"prefix_delegation": True, "cap": False}, 2 * 9 * 16 + 2 + 9),
        ("m5.large", {"custom_networking": True}, 1 * 9 + 2 + 9),
    ],
)
def test_pod_eni_trades_the_trunks_slot_for_the_types_branches(
    itype: str, kwargs: dict[str, object], expected: int
) -> None:
    assert max_pods(instance_limits(itype), pod_eni=True, **kwargs) == expected  # type: ignore[arg-type]


def test_pod_eni_needs_a_trunking_type_and_an_eni_left() -> None:
    with pytest.raises(MaxPodsError, match="takes no trunk ENI"):
        max_pods(instance_limits("t3.medium"), pod_eni=True)
    with pytest.raises(MaxPodsError, match="no ENI is left"):
        max_pods(instance_limits("m5.large"), pod_eni=True, max_eni=1)
    result = CliRunner().invoke(app, ["max-pods", "t3.medium", "--pod-eni"])
    assert result.exit_code == 2 and "takes no trunk ENI" in result.output
    result = CliRunner().invoke(app, ["max-pods", "m5.24xlarge", "--pod-eni", "--no-cap"])
    assert result.exit_code == 0 and result.output.strip() == str(14 * 49 + 2 + 107)
