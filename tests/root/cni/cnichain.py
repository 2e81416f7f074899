"""A minimal runtime side of CNI for these tests (what libcni does): run a conflist's plugins in order.

ADD runs the plugins in order, each getting the previous result as prevResult and, for the capabilities
it declares (e.g. portMappings), the runtime's values as runtimeConfig; DEL runs them in reverse with the
ADD result. Plugins are found in bin_dirs. (The lab kubelet has its own: vpcnet/lab/cniexec.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class PluginError(Exception):
    def __init__(self, plugin: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{plugin}: {msg} (code {code}){': ' + details if details else ''}")
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True)
class Attachment:
    container_id: str
    netns: str
    ifname: str = "eth0"
    # CNI_ARGS, e.g. K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID.
    args: Mapping[str, str] = field(default_factory=dict)
    # Capability arguments, e.g.
    # {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    run_in: str = ""  # the named network namespace the plugins run in (the node's); "" = ours


def find_plugin(plugin_type: str, bin_dirs: Sequence[str]) -> str:
    for d in bin_dirs:
        path = os.path.join(d, plugin_type)
        if os.access(path, os.X_OK):
            return path
    raise PluginError(plugin_type, 7, f"plugin {plugin_type!r} not found", f"searched {list(bin_dirs)}")


def plugin_config(
    conflist: Mapping[str, Any], plugin: Mapping[str, Any], att: Attachment, prev: dict[str, Any] | None
) -> dict[str, Any]:
    conf = dict(plugin)
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if prev is not None:
        conf["prevResult"] = prev
    wanted = {k for k, on in dict(plugin.get("capabilities", {})).items() if on}
    runtime = {k: v for k, v in att.capabilities.items() if k in wanted}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


async def exec_plugin(
    path: str, command: str, att: Attachment, conf: Mapping[str, Any], bin_dirs: Sequence[str]
) -> dict[str, Any] | None:
    """Run one plugin, in the namespace att.run_in names (the node's) as a runtime there would."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": att.container_id,
        "CNI_NETNS": att.netns,
        "CNI_IFNAME": att.ifname,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args.items()),
        "CNI_PATH": os.pathsep.join(bin_dirs),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    proc = await asyncio.create_subprocess_exec(
        *(["ip", "netns", "exec", att.run_in] if att.run_in else []),
        path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(json.dumps(conf).encode())
    name = os.path.basename(path)
    if proc.returncode != 0:
        try:
            body = json.loads(out)
            raise PluginError(
                name, int(body.get("code", 0)), str(body.get("msg", "")), str(body.get("details", ""))
            )
        except (ValueError, AttributeError):
            raise PluginError(
                name, 0, f"exit {proc.returncode}", (out + err).decode(errors="replace")
            ) from None
    if not out.strip():
        return None
    result = json.loads(out)
    return result if isinstance(result, dict) else None


async def add(conflist: Mapping[str, Any], att: Attachment, bin_dirs: Sequence[str]) -> dict[str, Any]:
    """ADD through every plugin; on a failure, DEL what was added (as libcni's callers do) and raise."""
    prev: dict[str, Any] | None = None
    done: list[Mapping[str, Any]] = []
    for plugin in conflist["plugins"]:
        path = find_plugin(plugin["type"], bin_dirs)
        try:
            prev = await exec_plugin(path, "ADD", att, plugin_config(conflist, plugin, att, prev), bin_dirs)
        except PluginError:
            for undo in reversed([*done, plugin]):
                try:
                    conf = plugin_config(conflist, undo, att, prev)
                    await exec_plugin(find_plugin(undo["type"], bin_dirs), "DEL", att, conf, bin_dirs)
                except PluginError:
                    pass
            raise
        done.append(plugin)
    return prev or {}


async def delete(
    conflist: Mapping[str, Any], att: Attachment, bin_dirs: Sequence[str], prev: dict[str, Any] | None = None
) -> None:
    for plugin in reversed(conflist["plugins"]):
        path = find_plugin(plugin["type"], bin_dirs)
        await exec_plugin(path, "DEL", att, plugin_config(conflist, plugin, att, prev), bin_dirs)


async def check(
    conflist: Mapping[str, Any], att: Attachment, bin_dirs: Sequence[str], prev: dict[str, Any]
) -> None:
    for plugin in conflist["plugins"]:
        path = find_plugin(plugin["type"], bin_dirs)
        await exec_plugin(path, "CHECK", att, plugin_config(conflist, plugin, att, prev), bin_dirs)


def load_conflist(conf_dir: str) -> dict[str, Any]:
    """The first *.conflist in conf_dir (lexical order, as runtimes pick it)."""
    names = sorted(n for n in os.listdir(conf_dir) if n.endswith(".conflist"))
    if not names:
        raise FileNotFoundError(f"no .conflist in {conf_dir}")
    with open(os.path.join(conf_dir, names[0])) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{conf_dir}/{names[0]} is not a JSON object")
    return data
