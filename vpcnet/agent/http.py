"""A small asyncio HTTP/1.1 server for the agent's read-only endpoints (/metrics, introspection).

One task per connection on the agent's loop; no threads. Handlers are registered by path and return
(status, content type, body). Only GET is served; anything else is 405. A body may be a stream (an async
iterator of chunks, e.g. the flow log's ?follow=1): it is sent as it comes, until the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes | AsyncIterator[bytes]]
Handler = Callable[[str], Awaitable[Response]]  # receives the query string

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Error",
}
MAX_HEADER_LINES = 100
MAX_LINE = 8 * 1024  # as most servers; the stream's own limit (64 KiB) would raise instead of answering


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


async def _read_line(reader: asyncio.StreamReader, status: int) -> bytes:
    """One line of at most MAX_LINE bytes; longer is _TooLarge(status) (the line is not read to its end)."""
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    except ValueError as exc:  # asyncio.LimitOverrunError, re-raised by readline as ValueError
        raise _TooLarge(status) from exc
    if len(line) > MAX_LINE:
        raise _TooLarge(status)
    return line


class HttpServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: dict[str, Handler] = {}
        self._server: asyncio.AbstractServer | None = None

    def route(self, path: str, handler: Handler) -> None:
        if path in self.routes:
            raise ValueError(f"{self.name}: path {path} is registered twice")
        self.routes[path] = handler

    async def start(self, address: str) -> None:
        """address is HOST:PORT or unix:PATH."""
        if address.startswith("unix:"):
            path = Path(address[5:])
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        else:
            host, _, port = address.rpartition(":")
            self._server = await asyncio.start_server(
                self._serve, host=host, port=int(port), reuse_address=True
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await _read_line(reader, 414)
                for _ in range(MAX_HEADER_LINES + 1):  # skip the headers
                    line = await _read_line(reader, 431)
                    if line in (b"\r\n", b"\n", b""):
                        break
                else:
                    raise _TooLarge(431)
                parts = request.decode("latin-1").split()
            except _TooLarge as too_large:
                parts, status = [], too_large.status
            else:
                status = 0
            body: bytes | AsyncIterator[bytes]
            if status:
                ctype, body = "text/plain", f"{_REASONS[status].lower()}\n".encode()
            elif len(parts) < 2:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            elif parts[0] != "GET":
                status, ctype, body = 405, "text/plain", b"only GET\n"
            else:
                path, _, query = parts[1].partition("?")
                handler = self.routes.get(path)
                if handler is None:
                    status, ctype, body = 404, "text/plain", f"no such path {path}\n".encode()
                else:
                    try:
                        status, ctype, body = await handler(query)
                    except Exception as exc:
                        log.exception("%s: handler for %s failed", self.name, path)
                        status, ctype, body = 500, "text/plain", f"{exc}\n".encode()
            reason = _REASONS.get(status, "Status")
            if not isinstance(body, bytes):
                await _stream(writer, f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n", body)
                return
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _stream(writer: asyncio.StreamWriter, head: str, chunks: AsyncIterator[bytes]) -> None:
    """No length: the body ends when the connection closes (HTTP/1.1 with Connection: close)."""
    writer.write((head + "Connection: close\r\n\r\n").encode())
    try:
        async for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
