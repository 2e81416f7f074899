from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ec2lab import Lab

from vpcnet.lab.ec2.state import Cloud


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "ec2-state.json"


@pytest.fixture
def lab(state_file: Path) -> Iterator[Lab]:
    yield Lab(Cloud(state_file))
