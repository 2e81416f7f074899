"""Run a CNI network configuration list the way a runtime does (libcni's AddNetworkList / DelNetworkList).

The lab kubelet uses this: it reads the node's conflist from the node's CNI configuration directory and
executes each plugin from the node's CNI binary directory, inside the node's network namespace, with the
standard environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH, CNI_ARGS) and the
plugin's configuration on stdin. ADD runs the plugins in order, passing each one's result as the next one's
prevResult; DEL runs them in reverse with the cached ADD result as prevResult.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where a runtime also looks for plugins the lab did not install (portmap, from containernetworking-plugins).
SYSTEM_CNI_PATHS = ("/usr/lib/cni", "/opt/cni/bin")
PLUGIN_TIMEOUT = 150.0  # the shim waits up to 120 s for the agent (an ENI attachment); a bit more here


class CniError(RuntimeError):
    """A plugin failed; carries the spec's error code and message when the plugin printed them."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI {command} by plugin {plugin!r} failed (code {code}): {msg}"
        super().__init__(text + (f" ({details})" if details else ""))


class PluginNotFound(CniError):
    """No executable of the plugin's type in CNI_PATH (no plugin ran, so there is no spec code to report)."""

    def __init__(self, plugin: str, command: str, bin_dirs: str) -> None:
        super().__init__(plugin, command, 0, f"plugin {plugin!r} not found in CNI_PATH {bin_dirs}")
        self.args = (f"CNI {command}: {self.msg}",)


class ConfigError(ValueError):
    """The node's CNI configuration is missing or unreadable; names the file."""


@dataclass(frozen=True)
class NetworkList:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: Path
    disable_check: bool = False


def load_network_list(conf_dir: Path) -> NetworkList:
    """The first configuration in `conf_dir` by file name (.conflist, .conf or .json), as kubelet picks it.
    A single-plugin .conf is treated as a list of one."""
    try:
        candidates = sorted(p for p in conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    except FileNotFoundError:
        candidates = []
    if not candidates:
        raise ConfigError(f"no CNI configuration in {conf_dir} (is the node's agent up and install-cni run?)")
    path = candidates[0]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    plugins = data.get("plugins") if path.suffix == ".conflist" else [data]
    if not isinstance(plugins, list) or not plugins:
        raise ConfigError(f"{path}: plugins: expected a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
            raise ConfigError(f"{path}: plugins[{i}].type: required (the plugin's executable name)")
    name, version = data.get("name"), data.get("cniVersion")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: name: required")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{path}: cniVersion: required")
    return NetworkList(name, version, tuple(plugins), path, bool(data.get("disableCheck", False)))


@dataclass(frozen=True)
class PodSandbox:
    """What the runtime knows about the pod when it calls CNI."""

    namespace: str
    name: str
    container_id: str
    netns_path: str
    uid: str = ""
    ifname: str = "eth0"
    port_mappings: tuple[dict[str, Any], ...] = ()  # runtimeConfig.portMappings for hostPorts

    @property
    def cni_args(self) -> str:
        args = [
            "IgnoreUnknown=1",
            f"K8S_POD_NAMESPACE={self.namespace}",
            f"K8S_POD_NAME={self.name}",
            f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
        ]
        if self.uid:
            args.append(f"K8S_POD_UID={self.uid}")
        return ";".join(args)


@dataclass
class CniExecutor:
    """Executes plugins from `bin_dirs` inside the network namespace `host_netns` (a /run/netns name)."""

    bin_dirs: Sequence[Path]
    host_netns: str | None = None
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def find(self, plugin_type: str, command: str = "ADD") -> Path:
        if "/" in plugin_type or plugin_type in (".", ".."):
            raise ConfigError(f"plugin type {plugin_type!r} must be a plain executable name")
        for directory in self.bin_dirs:
            candidate = Path(directory) / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        dirs = ":".join(str(d) for d in self.bin_dirs)
        raise PluginNotFound(plugin_type, command, dirs)

    def environment(self, command: str, sandbox: PodSandbox) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if not k.startswith("CNI_")}
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=sandbox.container_id,
            CNI_NETNS=sandbox.netns_path,
            CNI_IFNAME=sandbox.ifname,
            CNI_PATH=":".join(str(d) for d in self.bin_dirs),
            CNI_ARGS=sandbox.cni_args,
        )
        return env

    def plugin_config(
        self, netlist: NetworkList, plugin: dict[str, Any], sandbox: PodSandbox, prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        conf = dict(plugin)
        conf["cniVersion"] = netlist.cni_version
        conf["name"] = netlist.name
        capabilities = plugin.get("capabilities") or {}
        runtime_config: dict[str, Any] = {}
        if isinstance(capabilities, dict) and capabilities.get("portMappings") and sandbox.port_mappings:
            runtime_config["portMappings"] = list(sandbox.port_mappings)
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        else:
            conf.pop("runtimeConfig", None)
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def run_plugin(self, command: str, conf: dict[str, Any], sandbox: PodSandbox) -> dict[str, Any] | None:
        plugin_type = str(conf["type"])
        path = self.find(plugin_type, command)
        argv = [str(path)]
        if self.host_netns is not None:
            argv = ["nsenter", f"--net=/run/netns/{self.host_netns}", "--", *argv]
        try:
            proc = subprocess.run(
                argv,
                input=json.dumps(conf).encode(),
                env=self.environment(command, sandbox),
                capture_output=True,
                timeout=PLUGIN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CniError(plugin_type, command, 0, f"no answer within {PLUGIN_TIMEOUT:.0f} s") from None
        out = proc.stdout.decode(errors="replace").strip()
        if proc.returncode != 0:
            try:
                err = json.loads(out)
                code, msg, details = (
                    int(err.get("code", 0)),
                    str(err.get("msg", "")),
                    str(err.get("details", "")),
                )
            except (ValueError, AttributeError, TypeError):
                code, msg, details = 0, out or proc.stderr.decode(errors="replace").strip(), ""
            raise CniError(plugin_type, command, code, msg or f"exit status {proc.returncode}", details)
        if not out:
            return None
        try:
            result = json.loads(out)
        except ValueError:
            raise CniError(
                plugin_type, command, 0, f"printed something that is not JSON: {out[:200]!r}"
            ) from None
        if not isinstance(result, dict):
            raise CniError(plugin_type, command, 0, "printed JSON that is not an object")
        return result

    def add(self, netlist: NetworkList, sandbox: PodSandbox) -> dict[str, Any]:
        """ADD through every plugin; the final result. On a failure the caller runs `delete`."""
        prev: dict[str, Any] | None = None
        for plugin in netlist.plugins:
            result = self.run_plugin("ADD", self.plugin_config(netlist, plugin, sandbox, prev), sandbox)
            if result is not None:
                prev = result
        if prev is None:
            raise CniError(netlist.name, "ADD", 0, "no plugin returned a result")
        return prev

    def delete(self, netlist: NetworkList, sandbox: PodSandbox, cached: dict[str, Any] | None) -> None:
        """DEL through every plugin in reverse. Every plugin is tried; the first failure is raised after.
        A plugin that is not installed cannot have wired anything, so it is skipped."""
        first_error: CniError | None = None
        for plugin in reversed(netlist.plugins):
            try:
                self.run_plugin("DEL", self.plugin_config(netlist, plugin, sandbox, cached), sandbox)
            except PluginNotFound:
                continue
            except CniError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error


def result_ip(result: Mapping[str, Any]) -> str | None:
    """The pod's first IPv4 address in a CNI result (0.4.0 and 1.x shapes), without the prefix length; an
    IPv6 pod's (no IPv4 in the result) first IPv6 address."""
    addresses = [
        str(entry["address"]).split("/")[0]
        for entry in result.get("ips") or []
        if isinstance(entry, dict) and isinstance(entry.get("address"), str)
    ]
    return next((a for a in addresses if ":" not in a), addresses[0] if addresses else None)


def result_ips(result: Mapping[str, Any]) -> list[str]:
    """Every address of the pod in a CNI result, the one result_ip picks first (a dual-stack pod: its
    IPv4, then its IPv6, as status.podIPs lists them)."""
    addresses = [
        str(entry["address"]).split("/")[0]
        for entry in result.get("ips") or []
        if isinstance(entry, dict) and isinstance(entry.get("address"), str)
    ]
    first = result_ip(result)
    return [a for a in addresses if a == first] + [a for a in addresses if a != first]


def result_host_interface(result: Mapping[str, Any]) -> str | None:
    """The host-side interface of the pod (the one without a sandbox), as the VPC CNI reports its veth."""
    for entry in result.get("interfaces") or []:
        if isinstance(entry, dict) and not entry.get("sandbox") and isinstance(entry.get("name"), str):
            return str(entry["name"])
    return None
