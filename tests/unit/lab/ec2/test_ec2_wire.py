"""The Query protocol parser reads exactly what botocore's own EC2 serializer writes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from botocore.serialize import create_serializer

from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.wire import operation, parse_params

CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "CreateNetworkInterface",
        {
            "SubnetId": "subnet-1",
            "Groups": ["sg-1", "sg-2"],
            "Description": "aws-K8S-i-1",
            "SecondaryPrivateIpAddressCount": 3,
            "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.9", "Primary": True}],
            "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.0.16/28"}],
            "TagSpecifications": [
                {
                    "ResourceType": "network-interface",
                    "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}],
                }
            ],
        },
    ),
    (
        "DescribeNetworkInterfaces",
        {
            "Filters": [
                {"Name": "tag-key", "Values": ["x", "y"]},
                {"Name": "status", "Values": ["available"]},
            ],
            "MaxResults": 5,
            "NextToken": "abc=",
        },
    ),
    ("ModifyNetworkInterfaceAttribute", {"NetworkInterfaceId": "eni-1", "SourceDestCheck": {"Value": False}}),
    (
        "AssignPrivateIpAddresses",
        {"NetworkInterfaceId": "eni-1", "Ipv4Prefixes": ["10.0.0.16/28", "10.0.0.32/28"]},
    ),
    ("DeleteTags", {"Resources": ["eni-1", "i-2"], "Tags": [{"Key": "k"}]}),
    (
        "AttachNetworkInterface",
        {"NetworkInterfaceId": "eni-1", "InstanceId": "i-1", "DeviceIndex": 2, "NetworkCardIndex": 1},
    ),
]


@pytest.mark.parametrize(("action", "params"), CASES, ids=[c[0] for c in CASES])
def test_parse_reads_what_botocore_serializes(action: str, params: dict[str, Any]) -> None:
    op = operation(action)
    request = create_serializer("ec2").serialize_to_request(params, op)
    form = dict(parse_qsl(urlencode(request["body"]), keep_blank_values=True))
    assert form["Action"] == action
    assert parse_params(form, op.input_shape) == params


def test_bad_forms_are_refused_with_the_parameter_named() -> None:
    op = operation("DescribeNetworkInterfaces")
    with pytest.raises(Ec2Error, match=r"Filter\.1\.Colour") as e:
        parse_params({"Filter.1.Colour": "x"}, op.input_shape)
    assert e.value.code == "UnknownParameter"
    with pytest.raises(Ec2Error, match="MaxResults"):
        parse_params({"MaxResults": "many"}, op.input_shape)
    with pytest.raises(Ec2Error, match=r"Filter\.x"):
        parse_params({"Filter.x.Name": "a"}, op.input_shape)
