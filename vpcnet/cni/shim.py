"""`vpcnet-cni`: the executable a container runtime runs for every pod (CNI spec 1.1).

It forwards the request (the CNI_* environment and the stdin config) to the node agent over a unix socket
and prints the agent's answer. A runtime execs it once per pod, so start-up is most of its cost: the hot path
imports only builtin modules (sys, posix, _socket; `socket`, `os` and `json` would add ~20 ms of imports),
and `vpcnet install-cni` runs it through a launcher with `python -I -S` (no site, no .pth processing).
json is imported only on the rare paths (VERSION, errors the shim answers itself).

The shim answers VERSION itself; every other command goes to the agent. When the agent cannot be reached,
the answer is error 11 (try again later), or 50 for STATUS (plugin not available).
"""

from __future__ import annotations

import _socket
import posix
import sys

# The request the agent reads: this line, then NUL-terminated "KEY=VALUE" CNI_* variables, an empty entry,
# then the raw stdin config. The answer: "<exit code>\n" then the text to print.
PROTOCOL = b"VPCNET-CNI/1\n"
DEFAULT_SOCKET = "/var/run/vpcnet/agent.sock"
SOCKET_ENV = b"VPCNET_AGENT_SOCKET"
SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
COMMANDS = (b"ADD", b"DEL", b"CHECK", b"VERSION", b"STATUS", b"GC")
MAX_STDIN = 4 << 20
# ADD may wait for the agent to attach an ENI (EC2 takes seconds); beyond this the runtime retries.
TIMEOUT = 120.0

ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_INTERNAL = 999


def error_text(code: int, msg: str, details: str, stdin: bytes) -> bytes:
    """The spec's error JSON, in the config's cniVersion when it can be read."""
    import json

    version = LATEST_VERSION
    try:
        conf = json.loads(stdin)
        if isinstance(conf, dict) and conf.get("cniVersion") in SUPPORTED_VERSIONS:
            version = conf["cniVersion"]
    except ValueError:
        pass
    body = {"cniVersion": version, "code": code, "msg": msg, "details": details}
    return json.dumps(body).encode() + b"\n"


def version_text(stdin: bytes) -> tuple[int, bytes]:
    import json

    version = LATEST_VERSION
    if stdin.strip():
        try:
            conf = json.loads(stdin)
        except ValueError as exc:
            return 1, error_text(ERR_DECODE, "stdin is not JSON", str(exc), b"")
        if not isinstance(conf, dict):
            return 1, error_text(ERR_DECODE, "stdin is not a JSON object", "", b"")
        given = conf.get("cniVersion", LATEST_VERSION)
        if not isinstance(given, str):
            return 1, error_text(ERR_INVALID_CONFIG, "cniVersion must be a string", repr(given), b"")
        version = given
    body = {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    return 0, json.dumps(body).encode() + b"\n"


def encode_request(environ: dict[bytes, bytes], stdin: bytes) -> bytes:
    parts = [PROTOCOL]
    for key, value in environ.items():
        if key.startswith(b"CNI_"):
            parts.append(key + b"=" + value + b"\0")
    parts.append(b"\0")
    parts.append(stdin)
    return b"".join(parts)


def ask_agent(path: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def run(environ: dict[bytes, bytes], stdin: bytes, default_socket: str = DEFAULT_SOCKET) -> tuple[int, bytes]:
    """One invocation: returns (exit code, stdout bytes). Never raises."""
    try:
        command = environ.get(b"CNI_COMMAND", b"")
        if command not in COMMANDS:
            shown = command.decode("utf-8", "replace")
            return 1, error_text(
                ERR_INVALID_ENV,
                "CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, STATUS, GC",
                f"CNI_COMMAND={shown!r}",
                stdin,
            )
        if command == b"VERSION":
            return version_text(stdin)
        path = environ.get(SOCKET_ENV, b"").decode("utf-8", "replace") or default_socket
        try:
            answer = ask_agent(path, encode_request(environ, stdin))
        except OSError as exc:
            code = ERR_NOT_AVAILABLE if command == b"STATUS" else ERR_TRY_AGAIN_LATER
            return 1, error_text(
                code, "the vpcnet agent is not reachable (down or starting)", f"{path}: {exc}", stdin
            )
        head, sep, body = answer.partition(b"\n")
        if not sep or not head.isdigit():
            return 1, error_text(
                ERR_TRY_AGAIN_LATER, "the vpcnet agent closed the connection without an answer", path, stdin
            )
        return int(head), body
    except Exception as exc:
        return 1, error_text(ERR_INTERNAL, "vpcnet-cni failed", f"{type(exc).__name__}: {exc}", b"")


def read_stdin() -> bytes:
    chunks = []
    size = 0
    while size <= MAX_STDIN:
        chunk = posix.read(0, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def main(default_socket: str = DEFAULT_SOCKET) -> None:
    try:
        stdin = read_stdin()
    except OSError:
        stdin = b""
    code, out = run(dict(posix.environ), stdin, default_socket)
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
