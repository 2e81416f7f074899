"""The lab's fault document refuses numbers that are not finite (defect 7 of issue 14): NaN passed the
`>= 0` check (then every call of that action answered 500), infinity slept forever."""

from __future__ import annotations

import json

import pytest

from vpcnet.lab.ec2.faults import Faults, FaultsError


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ('{"latency": {"AssignPrivateIpAddresses": NaN}}', "latency.AssignPrivateIpAddresses"),
        ('{"latency": {"*": Infinity}}', "latency.*"),
        ('{"latency": {"*": 1' + "0" * 400 + "}}", "latency.*"),
        (
            '{"throttle": {"mutating": {"capacity": Infinity, "refill_per_second": 1}}}',
            "throttle.mutating.capacity",
        ),
        ('{"throttle": {"mutating": {"capacity": 5, "refill_per_second": NaN}}}', "throttle.mutating.refill"),
        ('{"failures": {"*": {"code": "X", "probability": NaN}}}', "failures.*.probability"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(doc: str, where: str) -> None:
    faults = Faults({"latency": {"*": 0.1}})
    with pytest.raises(FaultsError, match="finite number") as info:
        faults.update(json.loads(doc))
    assert where in str(info.value)
    assert faults.describe()["latency"] == {"*": 0.1}  # a bad document changes nothing
