"""Shared by the CNI unit tests: the real agent server (in-memory allocator, faked pod data plane) on a
thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cnifakes import FakePodNetwork

from vpcnet.cni.handlers import CniHandler
from vpcnet.cni.server import CniServer
from vpcnet.testing.memalloc import MemoryAllocator


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, MemoryAllocator]]:
    path = tmp_path_factory.mktemp("agent") / "agent.sock"
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 200, 0), ("10.0.2.0/24", 50, 1)])
    handler = CniHandler(lambda: allocator, FakePodNetwork())  # type: ignore[arg-type]
    server = CniServer(path, handler.handle)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield path, allocator
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
