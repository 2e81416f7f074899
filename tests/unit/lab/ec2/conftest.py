from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from ec2lab import Lab

from vpcnet.lab.ec2.faults import Faults
from vpcnet.lab.ec2.server import Ec2Service
from vpcnet.lab.ec2.state import Cloud

# No retries, short timeouts: a lab error must reach the test as it is, and fast.
CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10
)


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="AKIDLAB", aws_secret_access_key="lab-secret", region_name="us-west-2"
    )


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "ec2-state.json"


@pytest.fixture
def lab(state_file: Path) -> Iterator[Lab]:
    yield Lab(Cloud(state_file))


class Endpoint:
    def __init__(self, lab: Lab, service: Ec2Service, url: str, client: Any) -> None:
        self.lab = lab
        self.cloud = lab.cloud
        self.service = service
        self.url = url
        self.client = client


@pytest.fixture
def endpoint(lab: Lab, boto_session: boto3.session.Session) -> Iterator[Endpoint]:
    service = Ec2Service(lab.cloud, Faults())
    with service.start_local() as running:
        client = boto_session.client("ec2", endpoint_url=running.url, config=CLIENT_CONFIG)
        yield Endpoint(lab, service, running.url, client)
        client.close()
