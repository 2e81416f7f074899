"""The `node` fixture for the CNI root tests: a node of our own (see cnienv.Node), taken down in finally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cnienv import Node, unique_prefix


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(unique_prefix(), tmp_path)
    try:
        n.up()
        yield n
    finally:
        n.down()
