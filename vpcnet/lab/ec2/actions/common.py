"""What every action handler shares: the parameter and answer types, and reading a required parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vpcnet.lab.ec2.errors import Ec2Error

Params = dict[str, Any]  # a parsed request, boto3's member names
Answer = dict[str, Any]  # an answer, boto3's member names
Handler = Callable[[Params], Answer]


def required(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise Ec2Error("MissingParameter", f"The request must contain the parameter {name}")
    return value
