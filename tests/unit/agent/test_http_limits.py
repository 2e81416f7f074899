"""The agent's HTTP server answers oversized requests with 414/431 instead of dying with a traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from vpcnet.agent.http import HttpServer


async def ask(path: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET /ok HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET /ok HTTP/1.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n", b"431"),
        (b"\r\n\r\n", b"400"),
        (b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    ],
)
def test_oversized_requests_get_an_answer_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: bytes
) -> None:
    async def ok(query: str) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"fine\n"

    async def go() -> bytes:
        problems: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
        server = HttpServer("test")
        server.route("/ok", ok)
        socket_path = tmp_path / "http.sock"
        await server.start(f"unix:{socket_path}")
        try:
            answer = await ask(socket_path, request_bytes)
            # a second request is still served: the server lives on
            again = await ask(socket_path, b"GET /ok HTTP/1.1\r\n\r\n")
        finally:
            await server.stop()
        assert again.startswith(b"HTTP/1.1 200 ")
        assert problems == []
        return answer

    with caplog.at_level(logging.DEBUG):
        answer = asyncio.run(go())
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:100]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
