from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from ec2lab import CLIENT_CONFIG, Endpoint, Lab

from vpcnet.lab.ec2.api import Ec2Api
from vpcnet.lab.ec2.auth import LAB_CREDENTIALS
from vpcnet.lab.ec2.faults import Faults
from vpcnet.lab.ec2.server import Ec2Service
from vpcnet.lab.ec2.state import Cloud


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LAB_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-west-2",
    )


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "ec2-state.json"


@pytest.fixture
def lab() -> Lab:
    """In memory (no fsync per change): the persistence tests make their own Cloud with a file."""
    return Lab(Cloud())


@pytest.fixture(scope="session")
def shared_server(boto_session: boto3.session.Session) -> Iterator[tuple[Ec2Service, str, Any, Any]]:
    """One server and two clients for the whole session (client creation is the slow part); each test
    swaps its own cloud and faults in."""
    service = Ec2Service(Cloud(), Faults())
    with service.start_local() as running:
        client = boto_session.client("ec2", endpoint_url=running.url, config=CLIENT_CONFIG)
        unchecked = boto_session.client(
            "ec2", endpoint_url=running.url, config=CLIENT_CONFIG.merge(Config(parameter_validation=False))
        )
        yield service, running.url, client, unchecked
        client.close()
        unchecked.close()


@pytest.fixture
def endpoint(lab: Lab, shared_server: tuple[Ec2Service, str, Any, Any]) -> Endpoint:
    service, url, client, unchecked = shared_server
    service.cloud = lab.cloud
    service.api = Ec2Api(lab.cloud)
    service.faults = Faults()
    return Endpoint(lab, service, url, client, unchecked)
