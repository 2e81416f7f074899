"""Running a conflist as libcni does, with small plugin scripts that record what they were given."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from vpcnet.lab.cniexec import (
    CniError,
    CniExecutor,
    ConfigError,
    PodSandbox,
    load_network_list,
    result_host_interface,
    result_ip,
)

# A plugin that appends {command, env, conf} to $LOG and answers with prevResult plus one interface, or
# fails with a CNI error when its config says so.
PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(os.environ["LOG"], "a") as log:
    log.write(json.dumps({{"conf": conf, "env": env}}) + "\\n")
if conf.get("fail") == os.environ["CNI_COMMAND"]:
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 11, "msg": "busy", "details": "try later"}}))
    sys.exit(1)
if os.environ["CNI_COMMAND"] == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "ips": [], "interfaces": []}}
    result["interfaces"].append({{"name": conf["type"]}})
    if conf["type"] == "first":
        result["ips"].append({{"address": "10.1.2.3/32"}})
    print(json.dumps(result))
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("first", "second"):
        path = bin_dir / name
        path.write_text(PLUGIN.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("LOG", str(tmp_path / "log"))
    return bin_dir


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def write_conf(conf_dir: Path, plugins: list[dict[str, Any]], name: str = "10-test.conflist") -> None:
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / name).write_text(json.dumps({"cniVersion": "1.0.0", "name": "net", "plugins": plugins}))


SANDBOX = PodSandbox("x", "a", "c" * 64, "/run/netns/vt-pod-x-a", uid="u1", port_mappings=({"hostPort": 1},))


def test_add_chains_prev_result_and_passes_the_standard_environment(plugins: Path, tmp_path: Path) -> None:
    write_conf(
        tmp_path / "conf", [{"type": "first"}, {"type": "second", "capabilities": {"portMappings": True}}]
    )
    netlist = load_network_list(tmp_path / "conf")
    executor = CniExecutor([tmp_path / "nowhere", plugins], base_env=dict(os.environ, CNI_STALE="x"))
    result = executor.add(netlist, SANDBOX)
    assert result_ip(result) == "10.1.2.3"
    assert [i["name"] for i in result["interfaces"]] == ["first", "second"]
    first, second = calls(tmp_path)
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c" * 64,
        "CNI_NETNS": "/run/netns/vt-pod-x-a",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{tmp_path / 'nowhere'}:{plugins}",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;"
        f"K8S_POD_INFRA_CONTAINER_ID={'c' * 64};K8S_POD_UID=u1",
    }
    assert first["conf"] == {"type": "first", "cniVersion": "1.0.0", "name": "net"}
    assert second["conf"]["prevResult"]["interfaces"] == [{"name": "first"}]
    assert second["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}


def test_del_runs_in_reverse_with_the_cached_result_and_tries_every_plugin(
    plugins: Path, tmp_path: Path
) -> None:
    write_conf(tmp_path / "conf", [{"type": "first"}, {"type": "second", "fail": "DEL"}, {"type": "absent"}])
    netlist = load_network_list(tmp_path / "conf")
    executor = CniExecutor([plugins])
    with pytest.raises(CniError) as err:
        executor.delete(netlist, SANDBOX, {"cniVersion": "1.0.0", "ips": []})
    assert (err.value.code, err.value.msg, err.value.plugin) == (11, "busy", "second")
    order = [(c["env"]["CNI_COMMAND"], c["conf"]["type"]) for c in calls(tmp_path)]
    assert order == [("DEL", "second"), ("DEL", "first")]  # "absent" is not installed: nothing to undo
    assert calls(tmp_path)[1]["conf"]["prevResult"] == {"cniVersion": "1.0.0", "ips": []}


def test_add_failure_names_the_plugin_and_code(plugins: Path, tmp_path: Path) -> None:
    write_conf(tmp_path / "conf", [{"type": "first"}, {"type": "second", "fail": "ADD"}])
    with pytest.raises(CniError, match=r"CNI ADD by plugin 'second' failed \(code 11\): busy \(try later\)"):
        CniExecutor([plugins]).add(load_network_list(tmp_path / "conf"), SANDBOX)
    with pytest.raises(CniError, match=r"^CNI ADD: plugin 'first' not found in CNI_PATH [^ ]+$"):
        CniExecutor([tmp_path]).add(load_network_list(tmp_path / "conf"), SANDBOX)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no CNI configuration in"),
        ({"10-a.conflist": "{"}, "not readable JSON"),
        ({"10-a.conflist": "[]"}, "expected a JSON object"),
        (
            {"10-a.conflist": '{"name": "n", "cniVersion": "1.0.0", "plugins": []}'},
            "plugins: expected a non-empty",
        ),
        ({"10-a.conflist": '{"name": "n", "cniVersion": "1.0.0", "plugins": [{}]}'}, r"plugins\[0\].type"),
        ({"10-a.conflist": '{"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}'}, "name: required"),
    ],
)
def test_bad_configs_name_the_file_and_field(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_network_list(tmp_path)


def test_first_file_wins_and_a_single_conf_is_a_list_of_one(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(
        '{"name": "b", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}'
    )
    (tmp_path / "10-a.conf").write_text('{"name": "a", "cniVersion": "0.4.0", "type": "bridge"}')
    (tmp_path / "05-ignored.txt").write_text("x")
    netlist = load_network_list(tmp_path)
    assert (netlist.name, netlist.cni_version, netlist.plugins[0]["type"]) == ("a", "0.4.0", "bridge")


def test_plugin_types_cannot_be_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plain executable name"):
        CniExecutor([tmp_path]).find("../bin/sh")


def test_result_helpers() -> None:
    result = {
        "ips": [{"address": "fd00::1/128"}, {"address": "10.0.0.5/32"}],
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}, {"name": "eni1234567890a"}],
    }
    assert result_ip(result) == "10.0.0.5"
    assert result_host_interface(result) == "eni1234567890a"
    assert result_ip({}) is None and result_host_interface({}) is None
