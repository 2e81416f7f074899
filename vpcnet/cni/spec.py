"""CNI spec 1.1 on the agent's side: the request (environment + network config), errors and results.

Everything a runtime can send is checked here; anything wrong becomes a `CniError` carrying the spec's code
and a message that names the variable or field, never a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from vpcnet.cni.shim import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    LATEST_VERSION,
    PROTOCOL,
    SUPPORTED_VERSIONS,
)

__all__ = [
    "ERR_DECODE",
    "ERR_INCOMPATIBLE_VERSION",
    "ERR_INTERNAL",
    "ERR_INVALID_CONFIG",
    "ERR_INVALID_ENV",
    "ERR_NOT_AVAILABLE",
    "ERR_TRY_AGAIN_LATER",
    "LATEST_VERSION",
    "SUPPORTED_VERSIONS",
]

# Plugin-specific codes (the spec reserves 100+ for plugins).
ERR_NO_ADDRESS = 100  # the address manager had nothing to give
ERR_CHECK_FAILED = 101  # CHECK found the pod's wiring different from what ADD made
ERR_WIRING_FAILED = 102  # the kernel refused part of ADD (everything was rolled back)

GATEWAY = IPv4Address("169.254.1.1")
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
NEEDS_CONTAINER = ("ADD", "DEL", "CHECK")
VALID_ATTACHMENTS = "cni.dev/valid-attachments"

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAME_BAD = re.compile(r"[/:\s]")
_VETH_PREFIX = re.compile(r"^[A-Za-z0-9]{1,4}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details}


@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: str

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "default")

    @property
    def pod_name(self) -> str:
        # Runtimes outside Kubernetes (ctr run --cni) pass no pod name: the container stands for the pod.
        return self.args.get("K8S_POD_NAME", self.container_id)


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    mtu: int | None
    veth_prefix: str | None
    prev_result: dict[str, Any] | None
    valid_attachments: tuple[tuple[str, str], ...] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class CniRequest:
    env: CniEnv
    conf: NetConf


def decode_wire(data: bytes) -> tuple[dict[str, str], bytes]:
    """Split the shim's request into its CNI_* variables and the raw stdin."""
    if not data.startswith(PROTOCOL):
        raise CniError(ERR_DECODE, "not a vpcnet-cni request (wrong protocol line)", repr(data[:20]))
    env: dict[str, str] = {}
    pos = len(PROTOCOL)
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise CniError(ERR_DECODE, "the request's environment block is not terminated")
        if end == pos:
            pos += 1
            break
        key, sep, value = data[pos:end].partition(b"=")
        try:
            name, text = key.decode(), value.decode()
        except UnicodeDecodeError:
            raise CniError(ERR_INVALID_ENV, "environment is not UTF-8", repr(data[pos:end][:60])) from None
        if not sep:
            raise CniError(ERR_INVALID_ENV, "environment entry without '='", repr(name[:60]))
        env[name] = text
        pos = end + 1
    return env, data[pos:]


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


def check_ifname(name: str, what: str) -> str:
    if not 1 <= len(name) <= 15 or name in (".", "..") or _IFNAME_BAD.search(name):
        raise CniError(
            ERR_INVALID_ENV,
            f"{what} must be a valid interface name (1-15 characters, no '/', ':' or spaces)",
            repr(name),
        )
    return name


def parse_env(env: Mapping[str, str]) -> CniEnv:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            ERR_INVALID_ENV, "CNI_COMMAND must be one of ADD, DEL, CHECK, STATUS, GC", f"{command!r}"
        )
    container_id = env.get("CNI_CONTAINERID", "")
    netns = env.get("CNI_NETNS", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in NEEDS_CONTAINER:
        if not container_id:
            raise CniError(ERR_INVALID_ENV, f"CNI_CONTAINERID is required for {command}")
        if not _CONTAINER_ID.match(container_id):
            raise CniError(
                ERR_INVALID_ENV,
                "CNI_CONTAINERID must be letters, digits, '_', '.' or '-', starting with a letter or digit",
                repr(container_id[:80]),
            )
        check_ifname(ifname, "CNI_IFNAME")
    if command in ("ADD", "CHECK"):
        if not netns:
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS is required for {command}")
        if not netns.startswith("/"):
            raise CniError(ERR_INVALID_ENV, "CNI_NETNS must be an absolute path", repr(netns[:200]))
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
        value = args.get(key)
        if value is not None and (len(value) > 253 or not _K8S_NAME.match(value)):
            raise CniError(
                ERR_INVALID_ENV, f"CNI_ARGS {key} is not a valid Kubernetes name", repr(value[:80])
            )
    return CniEnv(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=args,
        path=env.get("CNI_PATH", ""),
    )


def _valid_attachments(value: Any) -> tuple[tuple[str, str], ...]:
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


def parse_config(data: bytes, command: str) -> NetConf:
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
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
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
        not isinstance(prefix, str) or not _VETH_PREFIX.match(prefix) or prefix in ("eth", "lo", "vlan")
    ):
        raise CniError(
            ERR_INVALID_CONFIG, "vethPrefix must be 1-4 letters or digits, not eth, lo or vlan", repr(prefix)
        )
    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(ERR_INVALID_CONFIG, "prevResult must be an object", type(prev).__name__)
    if prev is not None:
        _check_prev_result(prev)
    attachments = None
    if command == "GC":
        attachments = _valid_attachments(conf.get(VALID_ATTACHMENTS, []))
    return NetConf(
        cni_version=version,
        name=name,
        type=plugin_type,
        mtu=mtu,
        veth_prefix=prefix,
        prev_result=prev,
        valid_attachments=attachments,
        raw=conf,
    )


def _check_prev_result(prev: dict[str, Any]) -> None:
    for key in ("interfaces", "ips", "routes"):
        value = prev.get(key, [])
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise CniError(ERR_INVALID_CONFIG, f"prevResult.{key} must be a list of objects")


def prev_result_addresses(prev: dict[str, Any] | None) -> list[IPv4Address]:
    """IPv4 addresses in a prevResult (what DEL falls back on when the agent no longer knows the key)."""
    out: list[IPv4Address] = []
    for ip in (prev or {}).get("ips", []):
        addr = ip.get("address") if isinstance(ip, dict) else None
        if isinstance(addr, str):
            try:
                out.append(IPv4Address(addr.partition("/")[0]))
            except ValueError:
                continue
    return out


def config_version(data: bytes) -> str:
    """The request's config cniVersion if it can be read and is supported, else the latest (for errors)."""
    try:
        _, stdin = decode_wire(data)
        version = json.loads(stdin).get("cniVersion")
    except (CniError, ValueError, AttributeError, RecursionError):
        return LATEST_VERSION
    return version if version in SUPPORTED_VERSIONS else LATEST_VERSION


def parse_request(data: bytes) -> CniRequest:
    env_vars, stdin = decode_wire(data)
    env = parse_env(env_vars)
    return CniRequest(env=env, conf=parse_config(stdin, env.command))


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    sandbox: str = ""


def add_result(
    version: str,
    interfaces: list[Interface],
    address: IPv4Address,
    prev: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ADD result: the host veth, the pod's interface (sandbox = netns) and its /32 via 169.254.1.1.

    If a previous plugin produced a result, ours is appended to it (its interface indices kept)."""
    prev = prev or {}
    ifaces: list[dict[str, Any]] = [dict(x) for x in prev.get("interfaces", [])]
    ips: list[dict[str, Any]] = [dict(x) for x in prev.get("ips", [])]
    routes: list[dict[str, Any]] = [dict(x) for x in prev.get("routes", [])]
    base = len(ifaces)
    for iface in interfaces:
        entry: dict[str, Any] = {"name": iface.name, "mac": iface.mac}
        if iface.sandbox:
            entry["sandbox"] = iface.sandbox
        ifaces.append(entry)
    sandbox_index = base + next((i for i, x in enumerate(interfaces) if x.sandbox), len(interfaces) - 1)
    ip: dict[str, Any] = {"address": f"{address}/32", "gateway": str(GATEWAY), "interface": sandbox_index}
    if version == "0.4.0":
        ip = {"version": "4", **ip}
    ips.append(ip)
    routes.append({"dst": "0.0.0.0/0", "gw": str(GATEWAY)})
    result: dict[str, Any] = {"cniVersion": version, "interfaces": ifaces, "ips": ips, "routes": routes}
    result["dns"] = prev.get("dns", {}) if isinstance(prev.get("dns", {}), dict) else {}
    return result


def answer(code: int, body: dict[str, Any] | None) -> bytes:
    """The agent's answer to the shim: "<exit code>\\n" then the JSON to print (nothing for DEL/CHECK/GC)."""
    text = b"" if body is None else json.dumps(body).encode() + b"\n"
    return f"{code}\n".encode() + text


def error_answer(err: CniError, version: str = LATEST_VERSION) -> bytes:
    return answer(1, err.to_json(version))
