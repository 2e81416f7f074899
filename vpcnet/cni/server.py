"""The agent's unix-socket endpoint for the shim: one request per connection, root-only, never TCP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from vpcnet.cni.shim import MAX_STDIN
from vpcnet.cni.spec import ERR_DECODE, CniError, error_answer

log = logging.getLogger("vpcnet.cni.server")

MAX_REQUEST = MAX_STDIN + (64 << 10)
READ_TIMEOUT = 30.0
SOCKET_MODE = 0o600
STOP_GRACE = 30.0

Handler = Callable[[bytes], Awaitable[bytes]]


def bind_private_socket(path: Path) -> socket.socket:
    """A listening unix socket at path with mode 0600, without a moment of wider permissions: bound under a
    temporary name, restricted, then renamed into place (which also replaces a stale socket atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(str(temp))
        finally:
            os.umask(old)
        os.chmod(temp, SOCKET_MODE)
        sock.listen(256)
        os.replace(temp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    sock.setblocking(False)
    return sock


class CniServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = bind_private_socket(self.path)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)

    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None
        # Requests already taken are finished (an ADD half-way must roll back or complete, not vanish).
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REQUEST:
                raise CniError(ERR_DECODE, f"request larger than {MAX_REQUEST} bytes")
            chunks.append(chunk)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            try:
                data = await asyncio.wait_for(self._read(reader), READ_TIMEOUT)
            except CniError as err:
                reply = error_answer(err)
            except (TimeoutError, ConnectionError):
                return
            else:
                # Shielded: a client that hangs up must not cancel an ADD half-way (it rolls back on
                # failure, not on cancellation of the connection).
                reply = await asyncio.shield(self.handler(data))
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("serving a CNI request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
