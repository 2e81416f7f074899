"""The cut EC2 model: every action vpcnet sends (the query client, the branch ENI calls) is in it, it
matches the installed botocore, the client built on it knows only those actions, and an action outside
it still works through the full model."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from vpcnet.cloud import branch_ec2, ec2_model, ec2_query
from vpcnet.cloud.boto_ec2 import Boto3Ec2
from vpcnet.lab.ec2.auth import LAB_CREDENTIALS
from vpcnet.lab.ec2.local import LocalCloud


def test_actions_are_the_ones_the_query_client_sends() -> None:
    source = Path(ec2_query.__file__).read_text() + Path(branch_ec2.__file__).read_text()
    sent = set(re.findall(r'(?:_call|\.call)\(\s*"([A-Za-z]+)"', source))
    assert sent == set(ec2_model.ACTIONS), "update vpcnet.cloud.ec2_model.ACTIONS and rerun it"


def test_the_shipped_model_matches_the_installed_botocore() -> None:
    version, model = ec2_model.current_trimmed()
    shipped = json.loads(ec2_model.model_path(version).read_text())
    assert shipped == json.loads(json.dumps(model)), "regenerate: python -m vpcnet.cloud.ec2_model"
    assert set(shipped["operations"]) == set(ec2_model.ACTIONS)


def test_trim_keeps_every_shape_an_action_reaches() -> None:
    _, model = ec2_model.current_trimmed()
    shapes = model["shapes"]
    for shape in shapes.values():
        for key in ("member", "key", "value"):
            if key in shape:
                assert shape[key]["shape"] in shapes
        for member in shape.get("members", {}).values():
            assert member["shape"] in shapes


def test_client_on_the_cut_model_and_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LAB_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with LocalCloud() as lc:
        ec2 = Boto3Ec2(lc.cloud.region, endpoint_url=lc.ec2_url, rate_limit=200.0)
        operations = set(ec2._client.meta.service_model.operation_names)
        assert operations == set(ec2_model.ACTIONS)
        subnets = asyncio.run(ec2._call("DescribeSubnets"))
        assert "Subnets" in subnets
        # an action the cut model lacks goes through a client on the whole model
        answer = asyncio.run(ec2._call("DescribeVpcs"))
        assert "Vpcs" in answer or "ResponseMetadata" in answer
        assert len(ec2._client.meta.service_model.operation_names) > 100
