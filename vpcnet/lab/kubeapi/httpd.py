"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length or chunked request bodies, whole responses
or chunked streams (watches). An app is `async (HttpRequest, Responder) -> None` and never sees a socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
MAX_HEADER_LINES = 200


class BadHttp(Exception):
    """The request cannot be parsed; the connection is answered 400 and closed."""


@dataclass
class HttpRequest:
    method: str
    path: str  # decoded, without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default


class Responder:
    """Writes one response: either `send` (whole) or `stream` then `chunk`... then `end`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.started = False
        self.streaming = False

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.started = True
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(extra or {})}
        self._writer.write(self._head(status, headers) + body)
        await self._writer.drain()

    async def stream(self, status: int, content_type: str) -> None:
        self.started = self.streaming = True
        headers = {"Content-Type": content_type, "Transfer-Encoding": "chunked", "Connection": "close"}
        self._writer.write(self._head(status, headers))
        await self._writer.drain()

    async def chunk(self, data: bytes) -> None:
        if data:
            self._writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def client_gone(self) -> None:
        """Returns when the client closes its side (a watcher that went away)."""
        while await self._reader.read(4096):
            pass


App = Callable[[HttpRequest, Responder], Awaitable[None]]


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BadHttp("bad chunk size") from None
            if size == 0:
                while (await reader.readline()).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise BadHttp("request body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise BadHttp("bad Content-Length") from None
    if not 0 <= length <= MAX_BODY:
        raise BadHttp("request body too large")
    return await reader.readexactly(length) if length else b""


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, target, _version = line.decode("latin-1").split()
    except ValueError:
        raise BadHttp(f"bad request line {line[:100]!r}") from None
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadHttp("too many header lines")
    body = await _read_body(reader, headers)
    parts = urlsplit(target)
    return HttpRequest(method.upper(), unquote(parts.path) or "/", parse_qs(parts.query), headers, body)


async def _connection(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except BadHttp as err:
                await Responder(reader, writer).send(
                    400, f"{err}\n".encode(), "text/plain", {"Connection": "close"}
                )
                return
            if request is None:
                return
            responder = Responder(reader, writer)
            try:
                await app(request, responder)
            except Exception:
                log.exception("kube API failed on %s %s", request.method, request.path)
                if responder.started:
                    return  # mid-response: only closing the connection can say something went wrong
                await responder.send(
                    500,
                    b'{"kind":"Status","apiVersion":"v1","status":"Failure",'
                    b'"reason":"InternalError","code":500}',
                    "application/json",
                )
            if responder.streaming or request.headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class HttpServer:
    """A listening server that also ends its open connections on close (watches are long requests)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _connection(self._app, reader, writer)
        finally:
            self._tasks.discard(task)

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve_connection, host, port, limit=1024 * 1024)
        bound = self.server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def listen_on(self, sock: socket.socket) -> tuple[str, int]:
        """Serve on a socket bound elsewhere (the lab binds one inside its VPC namespace)."""
        self.server = await asyncio.start_server(self._serve_connection, sock=sock, limit=1024 * 1024)
        bound = self.server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self.server is not None:
            await self.server.wait_closed()
