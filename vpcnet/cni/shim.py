"""`vpcnet-cni`: the executable a container runtime runs for every pod (CNI spec 1.1).

It forwards the request (the CNI_* environment and the stdin config) to the node agent over a unix socket
and prints the agent's answer. A runtime execs it once per pod, so start-up is most of its cost: the hot path
imports only builtin modules (sys, posix, _socket; `socket`, `os` and `json` would add ~20 ms of imports),
and `vpcnet install-cni` runs it through a launcher with `python -I -S` (no site, no .pth processing).
json is imported only on the rare paths (VERSION, errors the shim answers itself).

The shim answers VERSION itself; every other command goes to the agent. When the agent cannot be reached,
the shim checks the request itself (the rules below are the one home of the CNI's request checks; the agent
runs the same ones): a malformed request gets the spec's code for what is wrong (4 environment, 6 decoding,
7 config, 1 version), whether or not the agent is up; only a valid request gets 11 (try again later), or
50 for STATUS (plugin not available). The checks cost nothing on the hot path: they run there only when
the agent is down, and import nothing but json (lazily).
"""

from __future__ import annotations

import _socket
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

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

NEEDS_CONTAINER = ("ADD", "DEL", "CHECK")
NEEDS_NETNS = ("ADD", "CHECK")
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
IFNAMSIZ = 16  # the kernel's limit in bytes, with the terminating NUL

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ALNUM | frozenset("_.-")
_K8S_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class CniError(Exception):
    """A request the spec calls wrong (or one the agent cannot serve): code, message and details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details}


# ---------------------------------------------------------------------- the request checks (one home)


def _is_id(text: str) -> bool:
    """Letters, digits, '_', '.', '-', starting with a letter or digit (ASCII): container IDs, net names."""
    return bool(text) and text[0] in _ALNUM and all(c in _ID_CHARS for c in text)


def _is_k8s_name(text: str) -> bool:
    return (
        0 < len(text) <= 253
        and text[0] in _ALNUM
        and text[-1] in _ALNUM
        and all(c in _K8S_CHARS for c in text)
        and text == text.lower()
    )


def check_ifname(name: str, what: str) -> str:
    """A Linux interface name: 1-15 bytes (not characters: the kernel counts bytes), no '/', ':' or
    whitespace, not '.' or '..'."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size < IFNAMSIZ or name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise CniError(
            ERR_INVALID_ENV,
            f"{what} must be a valid interface name (1-15 bytes, no '/', ':' or spaces)",
            repr(name),
        )
    return name


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS is "K=V;K2=V2" (the spec's form); an entry without "=" is an error."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENV, "CNI_ARGS entries must be KEY=VALUE separated by ';'", repr(part))
        out[key] = value
    return out


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Check the CNI_* variables for their command (code 4, naming the variable); returns CNI_ARGS parsed."""
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
        raise CniError(
            ERR_INVALID_ENV, "CNI_COMMAND must be one of ADD, DEL, CHECK, STATUS, GC", f"{command!r}"
        )
    if command in NEEDS_CONTAINER:
        container_id = env.get("CNI_CONTAINERID", "")
        if not container_id:
            raise CniError(ERR_INVALID_ENV, f"CNI_CONTAINERID is required for {command}")
        if not _is_id(container_id):
            raise CniError(
                ERR_INVALID_ENV,
                "CNI_CONTAINERID must be letters, digits, '_', '.' or '-', starting with a letter or digit",
                repr(container_id[:80]),
            )
        check_ifname(env.get("CNI_IFNAME", ""), "CNI_IFNAME")
    if command in NEEDS_NETNS:
        netns = env.get("CNI_NETNS", "")
        if not netns:
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS is required for {command}")
        if not netns.startswith("/"):
            raise CniError(ERR_INVALID_ENV, "CNI_NETNS must be an absolute path", repr(netns[:200]))
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
        value = args.get(key)
        if value is not None and not _is_k8s_name(value):
            raise CniError(
                ERR_INVALID_ENV, f"CNI_ARGS {key} is not a valid Kubernetes name", repr(value[:80])
            )
    return args


def check_config(data: bytes, command: str) -> dict[str, Any]:
    """Decode and check the network configuration for command: 6 if it is no JSON object, 1 for a
    cniVersion we do not speak, 7 for a bad field (naming it). Returns the config."""
    import json

    try:
        conf = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CniError(ERR_DECODE, "the network configuration on stdin is not JSON", str(exc)[:200]) from None
    if not isinstance(conf, dict):
        raise CniError(ERR_DECODE, "the network configuration must be a JSON object", type(conf).__name__)
    version = conf.get("cniVersion")
    if not isinstance(version, str):
        raise CniError(ERR_INVALID_CONFIG, "cniVersion must be a string", repr(version)[:80])
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"cniVersion must be one of {', '.join(SUPPORTED_VERSIONS)}",
            repr(version[:40]),
        )
    if command in ("STATUS", "GC") and version != "1.1.0":
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0", version)
    name = conf.get("name")
    if not isinstance(name, str) or not _is_id(name):
        raise CniError(
            ERR_INVALID_CONFIG,
            "name must be a network name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            repr(name)[:80],
        )
    plugin_type = conf.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise CniError(ERR_INVALID_CONFIG, "type must be a non-empty string", repr(plugin_type)[:80])
    mtu = conf.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 9001):
        raise CniError(ERR_INVALID_CONFIG, "mtu must be an integer from 576 to 9001", repr(mtu)[:40])
    prefix = conf.get("vethPrefix")
    if prefix is not None and (
        not isinstance(prefix, str)
        or not 1 <= len(prefix) <= 4
        or not all(c in _ALNUM for c in prefix)
        or prefix in ("eth", "lo", "vlan")
    ):
        raise CniError(
            ERR_INVALID_CONFIG, "vethPrefix must be 1-4 letters or digits, not eth, lo or vlan", repr(prefix)
        )
    prev = conf.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise CniError(ERR_INVALID_CONFIG, "prevResult must be an object", type(prev).__name__)
        for key in ("interfaces", "ips", "routes"):
            value = prev.get(key, [])
            if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
                raise CniError(ERR_INVALID_CONFIG, f"prevResult.{key} must be a list of objects")
    if command == "GC":
        valid_attachments(conf.get(VALID_ATTACHMENTS, []))
    return conf


def valid_attachments(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise CniError(ERR_INVALID_CONFIG, f"{VALID_ATTACHMENTS} must be a list", type(value).__name__)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise CniError(ERR_INVALID_CONFIG, f"{VALID_ATTACHMENTS}[{i}] must be an object")
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise CniError(
                ERR_INVALID_CONFIG, f"{VALID_ATTACHMENTS}[{i}] needs string containerID and ifname"
            )
        out.append((cid, ifname))
    return tuple(out)


def decode_env(environ: Mapping[bytes, bytes]) -> dict[str, str]:
    """The CNI_* variables as text; not UTF-8 is bad environment (4)."""
    env: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(b"CNI_"):
            continue
        try:
            env[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise CniError(
                ERR_INVALID_ENV, "environment is not UTF-8", repr((key + b"=" + value)[:60])
            ) from None
    return env


def request_problem(environ: Mapping[bytes, bytes], stdin: bytes) -> CniError | None:
    """What is wrong with a request by the spec's rules (environment first, as the agent checks), or None."""
    try:
        env = decode_env(environ)
        check_env(env)
        check_config(stdin, env.get("CNI_COMMAND", ""))
    except CniError as err:
        return err
    return None


# ---------------------------------------------------------------------- talking to the agent


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
            return agent_unavailable(
                environ, stdin, "the vpcnet agent is not reachable (down or starting)", f"{path}: {exc}"
            )
        head, sep, body = answer.partition(b"\n")
        if not sep or not head.isdigit():
            return agent_unavailable(
                environ, stdin, "the vpcnet agent closed the connection without an answer", path
            )
        return int(head), body
    except Exception as exc:
        return 1, error_text(ERR_INTERNAL, "vpcnet-cni failed", f"{type(exc).__name__}: {exc}", b"")


def agent_unavailable(environ: dict[bytes, bytes], stdin: bytes, msg: str, details: str) -> tuple[int, bytes]:
    """No answer from the agent: a malformed request still gets its own code (a runtime must not retry
    it); a valid one gets 11 (try again later), STATUS 50 (not available)."""
    problem = request_problem(environ, stdin)
    if problem is not None:
        return 1, error_text(problem.code, problem.msg, problem.details, stdin)
    code = ERR_NOT_AVAILABLE if environ.get(b"CNI_COMMAND") == b"STATUS" else ERR_TRY_AGAIN_LATER
    return 1, error_text(code, msg, details, stdin)


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
    # No interpreter finalization (module teardown, GC: 2-4 ms of a ~15 ms run): nothing is left to clean up.
    posix._exit(code)


if __name__ == "__main__":
    main()
