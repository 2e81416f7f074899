"""Shared helpers of the EC2 endpoint tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from vpcnet.lab.ec2.server import Ec2Service
from vpcnet.lab.ec2.state import Cloud

AZ_A = "us-west-2a"
AZ_B = "us-west-2b"


class Lab:
    """A small cloud: one VPC 10.0.0.0/16, subnet A 10.0.0.0/24 (us-west-2a), B 10.0.1.0/24 (us-west-2b)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.vpc = cloud.create_vpc("10.0.0.0/16")
        self.subnet_a = cloud.create_subnet(
            self.vpc.id, "10.0.0.0/24", AZ_A, tags={"kubernetes.io/role/cni": "1"}
        )
        self.subnet_b = cloud.create_subnet(self.vpc.id, "10.0.1.0/24", AZ_B)


def error_code(call: Callable[..., Any], **kwargs: Any) -> str:
    """Call a boto3 method that must fail; return EC2's error code."""
    try:
        call(**kwargs)
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    raise AssertionError(f"{call.__name__}({kwargs}) succeeded; an error was expected")


# No retries, short timeouts: a lab error must reach the test as it is, and fast.
CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10
)


class Endpoint:
    def __init__(self, lab: Lab, service: Ec2Service, url: str, client: Any, unchecked: Any) -> None:
        self.lab = lab
        self.cloud = lab.cloud
        self.service = service
        self.url = url
        self.client = client
        self.unchecked = unchecked  # no client-side validation: reaches the endpoint's own checks
