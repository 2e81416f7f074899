"""CNI spec 1.1 on the agent's side: the request (environment + network config), errors and results.

Everything a runtime can send is checked; anything wrong becomes a `CniError` carrying the spec's code and
a message that names the variable or field, never a traceback. The checks themselves live in the shim
(`check_env`, `check_config`), which runs them when the agent cannot answer: one set of rules, so a
malformed request gets the same code whether or not the agent is up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
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
    VALID_ATTACHMENTS,
    CniError,
    check_config,
    check_env,
    check_ifname,
    parse_cni_args,
    valid_attachments,
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
    "CniError",
    "check_ifname",
    "parse_cni_args",
]

# Plugin-specific codes (the spec reserves 100+ for plugins).
ERR_NO_ADDRESS = 100  # the address manager had nothing to give
ERR_CHECK_FAILED = 101  # CHECK found the pod's wiring different from what ADD made
ERR_WIRING_FAILED = 102  # the kernel refused part of ADD (everything was rolled back)

GATEWAY = IPv4Address("169.254.1.1")
GATEWAY6 = IPv6Address("fe80::1")  # an IPv6 pod's (the VPC CNI's IPv6 mode)
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")


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


def parse_env(env: Mapping[str, str]) -> CniEnv:
    args = check_env(env)
    return CniEnv(
        command=env.get("CNI_COMMAND", ""),
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=args,
        path=env.get("CNI_PATH", ""),
    )


def parse_config(data: bytes, command: str) -> NetConf:
    conf = check_config(data, command)
    return NetConf(
        cni_version=conf["cniVersion"],
        name=conf["name"],
        type=conf["type"],
        mtu=conf.get("mtu"),
        veth_prefix=conf.get("vethPrefix"),
        prev_result=conf.get("prevResult"),
        valid_attachments=valid_attachments(conf.get(VALID_ATTACHMENTS, [])) if command == "GC" else None,
        raw=conf,
    )


def prev_result_addresses(prev: dict[str, Any] | None) -> list[IPv4Address | IPv6Address]:
    """Addresses in a prevResult (what DEL falls back on when the agent no longer knows the key)."""
    out: list[IPv4Address | IPv6Address] = []
    for ip in (prev or {}).get("ips", []):
        addr = ip.get("address") if isinstance(ip, dict) else None
        if isinstance(addr, str):
            try:
                parsed = ip_address(addr.partition("/")[0])
            except ValueError:
                continue
            if not parsed.is_link_local:  # a pod's own addresses only, never its gateway's
                out.append(parsed)
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
    addresses: IPv4Address | IPv6Address | tuple[IPv4Address | IPv6Address, ...],
    prev: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ADD result: the host veth, the pod's interface (sandbox = netns) and its /32 via 169.254.1.1
    (an IPv6 pod: its /128 via fe80::1; its node-local IPv4 is not reported, as the VPC CNI's egress
    plugin does not: the pod's IP is the IPv6 one). A dual-stack pod (Calico mode) has one entry and one
    default route per family, IPv4 first, as Calico's CNI reports them.

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
    for address in addresses if isinstance(addresses, tuple) else (addresses,):
        gateway, plen = (GATEWAY, 32) if address.version == 4 else (GATEWAY6, 128)
        ip: dict[str, Any] = {
            "address": f"{address}/{plen}",
            "gateway": str(gateway),
            "interface": sandbox_index,
        }
        if version == "0.4.0":
            ip = {"version": str(address.version), **ip}
        ips.append(ip)
        routes.append({"dst": "0.0.0.0/0" if address.version == 4 else "::/0", "gw": str(gateway)})
    result: dict[str, Any] = {"cniVersion": version, "interfaces": ifaces, "ips": ips, "routes": routes}
    result["dns"] = prev.get("dns", {}) if isinstance(prev.get("dns", {}), dict) else {}
    return result


def answer(code: int, body: dict[str, Any] | None) -> bytes:
    """The agent's answer to the shim: "<exit code>\\n" then the JSON to print (nothing for DEL/CHECK/GC)."""
    text = b"" if body is None else json.dumps(body).encode() + b"\n"
    return f"{code}\n".encode() + text


def error_answer(err: CniError, version: str = LATEST_VERSION) -> bytes:
    return answer(1, err.to_json(version))
