"""A small threaded HTTP server for the lab's control plane (EC2 endpoint, IMDS) that serves on a socket the
caller has already bound — the lab binds them inside the VPC network namespace — or on 127.0.0.1:0 for tests.

An app is a callable `Request -> Response`; it never sees the socket."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # keys lower-case
    body: bytes
    client_ip: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    ip_ttl: int | None = None  # the IP TTL this answer travels with (IMDS's hop limit; the connection then
    # closes); None: the default


App = Callable[[Request], Response]


def _handler_for(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
        server_version = "vpcnet-lab"
        sys_version = ""

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes: without NODELAY, Nagle and the client's delayed
            # ACK add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.send_error(400, "bad Content-Length")
                return
            if not 0 <= length <= MAX_BODY:
                self.send_error(413, "request body too large")
                return
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=parts.path or "/",
                query=parts.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_ip=str(self.client_address[0]),
            )
            try:
                response = app(request)
            except Exception:
                log.exception("lab HTTP app failed on %s %s", self.command, self.path)
                response = Response(500, b"internal error\n")
            if response.ip_ttl is not None:
                # The TTL must hold for every segment of this answer, retransmissions included: TCP resends
                # a segment dropped one hop away (a pod behind the node) long after write() returned, with
                # the socket's TTL of that moment. So it is never restored: the connection ends with this
                # answer (the client's next request opens a new one, with the default TTL).
                self.wfile.flush()
                self.connection.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, response.ip_ttl)
                self.close_connection = True
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.ip_ttl is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(app: App, sock: socket.socket) -> LabHTTPServer:
    """A server on an already bound TCP socket (listen() is called here if needed). Run it with
    serve_forever() (in a thread of your choice); shutdown() + server_close() stop it and close the socket."""
    server = LabHTTPServer(sock.getsockname()[:2], _handler_for(app), bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    host, port = sock.getsockname()[:2]
    server.server_address = (host, port)
    server.server_name, server.server_port = str(host), int(port)
    sock.listen(128)
    return server


def bind_local(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class RunningServer:
    """A server running in a background thread (tests, the lab daemon)."""

    def __init__(self, server: LabHTTPServer) -> None:
        self.server = server
        # A short poll interval: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="lab-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
