"""A small asyncio TCP relay: accepts on sockets bound elsewhere (e.g. inside the VPC namespace) and
connects to an upstream from the daemon's own namespace. Used to put the host-side etcd at
10.0.255.253:2379 inside the lab."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

log = logging.getLogger(__name__)
_CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


async def serve_proxy(sock: socket.socket, upstream_host: str, upstream_port: int) -> asyncio.Server:
    """Start relaying connections accepted on the bound, listening `sock` to upstream."""

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError as e:
            log.warning("proxy: upstream %s:%d unreachable: %s", upstream_host, upstream_port, e)
            await _close(c_writer)
            return
        await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))
        await _close(u_writer)
        await _close(c_writer)

    return await asyncio.start_server(handle, sock=sock)
