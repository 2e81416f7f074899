"""Fault: a CNI fuzz campaign (hypothesis) against a lab node's agent while it is up, down and starting.

Every case is one request as a runtime would make it (CNI_* environment + stdin config) through the shim,
built from a valid request with at most one defect in the environment and one in the config, each defect
carrying the code the CNI spec gives it (4 environment, 6 decoding, 7 config, 1 version; the environment is
checked first). The oracle is the generator's, not the shim's own checks:
  malformed request              -> its defect's code, whatever the agent's state
  valid, agent down or starting  -> 11 (STATUS: 50); while starting, the up answer once the agent is ready
  valid, agent up                -> ADD/CHECK of a path that is no namespace 4, ADD of a real pod 0 (then
                                    DEL), DEL 0, GC 0, STATUS 0
Figures: tracebacks (in the agent's log, or an internal-error answer 999, or the shim raising), wrong_codes,
agent_deaths (the agent's process gone while it should be up): all must be 0.
Run as root: `python faults/cni_fuzz.py [--quick] [--cases N]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from common import LabHandle, Scenario, log, poll
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ipamd_lab import ipam, kill_agent
from nodecheck import restart_agent, stop_agent

from vpcnet.cni import shim

ENV = {"VPCNET_POOL_INTERVAL": "0.5", "IP_COOLDOWN_PERIOD": "1", "WARM_IP_TARGET": "2"}
ITYPE = "t3.medium"
COMMANDS = ["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "STATUS", "GC"]
NEEDS_CONTAINER = ("ADD", "DEL", "CHECK")
NEEDS_NETNS = ("ADD", "CHECK")
EVERY = ("ADD", "DEL", "CHECK", "STATUS", "GC")

# Environment defects: (name, commands it applies to); all are code 4.
ENV_DEFECTS = [
    ("command_unknown", EVERY),
    ("containerid_missing", NEEDS_CONTAINER),
    ("containerid_bad", NEEDS_CONTAINER),
    ("ifname_too_long", NEEDS_CONTAINER),
    ("ifname_bad_char", NEEDS_CONTAINER),
    ("netns_missing", NEEDS_NETNS),
    ("netns_relative", NEEDS_NETNS),
    ("args_no_equals", EVERY),
    ("pod_name_bad", EVERY),
    ("not_utf8", EVERY),
]
# Config defects: name -> code.
CONF_DEFECTS = {
    "not_json": 6,
    "not_object": 6,
    "version_missing": 7,
    "version_not_string": 7,
    "version_unknown": 1,
    "name_bad": 7,
    "type_bad": 7,
    "mtu_bad": 7,
    "veth_prefix_bad": 7,
    "prev_result_bad": 7,
}
junk_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | junk_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_text, inner, max_size=3),
    max_leaves=8,
)


@dataclass
class Case:
    command: str
    env: dict[bytes, bytes]
    stdin: bytes
    expected: int | None  # the defect's code; None for a valid request
    real_pod: bool = False
    labels: list[str] = field(default_factory=list)


@st.composite
def cases(draw: st.DrawFn, netns_dir: str, real_netns: str | None, serial: list[int]) -> Case:
    serial[0] += 1
    command = draw(st.sampled_from(COMMANDS))
    version = "1.1.0" if command in ("STATUS", "GC") else draw(st.sampled_from(shim.SUPPORTED_VERSIONS))
    real_pod = command == "ADD" and real_netns is not None and draw(st.integers(0, 3)) == 0
    netns = real_netns if real_pod and real_netns else f"{netns_dir}/fz-none-{serial[0]}"
    env: dict[str, bytes] = {
        "CNI_COMMAND": command.encode(),
        "CNI_CONTAINERID": f"fz{serial[0]}-{draw(st.from_regex(r'[a-z0-9]{0,8}', fullmatch=True))}".encode(),
        "CNI_NETNS": netns.encode(),
        "CNI_IFNAME": draw(st.sampled_from([b"eth0", b"eth1", b"net0"])),
        "CNI_PATH": b"/usr/lib/cni",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=fz{serial[0]}".encode(),
    }
    for key in draw(st.lists(st.sampled_from(["CNI_EXTRA", "CNI_X_Y", "CNI_"]), max_size=2, unique=True)):
        env[key] = draw(junk_text).encode()
    conf: dict[str, Any] = {"cniVersion": version, "name": "aws-cni", "type": "vpcnet-cni"}
    if draw(st.booleans()):
        conf["mtu"] = draw(st.integers(576, 9001))
    for key in draw(st.lists(st.sampled_from(["extra", "ipam", "dns", "runtimeConfig", "args"]), max_size=2)):
        conf[key] = draw(json_values)
    if command == "GC":
        conf[shim.VALID_ATTACHMENTS] = []
    labels: list[str] = []
    expected: int | None = None
    applicable = [name for name, commands in ENV_DEFECTS if command in commands]
    env_defect = draw(st.none() | st.sampled_from(applicable)) if draw(st.integers(0, 2)) == 0 else None
    if env_defect is not None:
        expected, labels = shim.ERR_INVALID_ENV, [env_defect]
        _break_env(draw, env, env_defect)
    conf_defect = draw(st.sampled_from(sorted(CONF_DEFECTS))) if draw(st.integers(0, 2)) == 0 else None
    stdin = json.dumps(conf).encode()
    if conf_defect is not None:
        labels.append(conf_defect)
        expected = expected or CONF_DEFECTS[conf_defect]
        stdin = _break_conf(draw, conf, conf_defect)
    if expected is not None:
        real_pod = False
    return Case(command, {k.encode(): v for k, v in env.items()}, stdin, expected, real_pod, labels)


def _break_env(draw: st.DrawFn, env: dict[str, bytes], defect: str) -> None:
    if defect == "command_unknown":
        env["CNI_COMMAND"] = draw(
            st.sampled_from([b"", b"add", b"DELETE", b"ADD ", b"\xff"]) | st.binary(max_size=6)
        )
        if env["CNI_COMMAND"] in shim.COMMANDS:
            env["CNI_COMMAND"] = b"NOPE"
    elif defect == "containerid_missing":
        del env["CNI_CONTAINERID"]
    elif defect == "containerid_bad":
        env["CNI_CONTAINERID"] = draw(st.sampled_from(["-a", "a/b", "a b", "é", "a$", ".x"])).encode()
    elif defect == "ifname_too_long":
        env["CNI_IFNAME"] = draw(st.sampled_from(["a" * 16, "é" * 8, "ethernet-interface0"])).encode()
    elif defect == "ifname_bad_char":
        env["CNI_IFNAME"] = draw(st.sampled_from(["", "a/b", "a:b", "a b", ".", ".."])).encode()
    elif defect == "netns_missing":
        del env["CNI_NETNS"]
    elif defect == "netns_relative":
        env["CNI_NETNS"] = draw(st.sampled_from(["run/netns/x", "x", "./x"])).encode()
    elif defect == "args_no_equals":
        env["CNI_ARGS"] = env["CNI_ARGS"] + b";" + draw(st.sampled_from([b"novalue", b"=v", b"K8S_POD_NAME"]))
    elif defect == "pod_name_bad":
        env["CNI_ARGS"] = b"K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=" + draw(
            st.sampled_from([b"Upper", b"-a", b"a_b", b"", b"x" * 254])
        )
    elif defect == "not_utf8":
        key = draw(st.sampled_from(["CNI_ARGS", "CNI_PATH", "CNI_EXTRA"]))
        env[key] = env.get(key, b"") + b"\xff\xfe"


def _break_conf(draw: st.DrawFn, conf: dict[str, Any], defect: str) -> bytes:
    text = json.dumps(conf)
    if defect == "not_json":
        return draw(
            st.sampled_from([text[: len(text) // 2].encode(), b"", b"not json{", b"\xff\xfe{}", b"{'a': 1}"])
        )
    if defect == "not_object":
        return json.dumps(draw(st.sampled_from([[conf], 1, "x", None, True]))).encode()
    if defect == "version_missing":
        del conf["cniVersion"]
    elif defect == "version_not_string":
        conf["cniVersion"] = draw(st.sampled_from([1, 1.0, None, ["1.0.0"], {"v": 1}]))
    elif defect == "version_unknown":
        conf["cniVersion"] = draw(st.sampled_from(["9.9.9", "0.3.1", "", "1.0", "v1.0.0"]))
    elif defect == "name_bad":
        conf["name"] = draw(st.sampled_from([None, "", "-x", "a b", 5, "é"]))
    elif defect == "type_bad":
        conf["type"] = draw(st.sampled_from([None, "", 5, []]))
    elif defect == "mtu_bad":
        conf["mtu"] = draw(st.sampled_from([0, 575, 9002, "1500", True, 1.5]))
    elif defect == "veth_prefix_bad":
        conf["vethPrefix"] = draw(st.sampled_from(["", "toolong", "eth", "a-b", 7]))
    elif defect == "prev_result_bad":
        conf["prevResult"] = draw(st.sampled_from([[], "x", {"ips": "x"}, {"interfaces": [1]}]))
    return json.dumps(conf).encode()


class Campaign:
    def __init__(self, lab: LabHandle) -> None:
        self.lab = lab
        self.socket = str(lab.layout.agent_socket("node1"))
        self.tracebacks = 0
        self.wrong: list[str] = []
        self.deaths = 0
        self.counts: dict[str, int] = {}
        self.codes: dict[str, int] = {}  # "<state> <code>" -> answers

    def agent_pid(self) -> int | None:
        try:
            pid = int((self.lab.layout.node_dir("node1") / "agent.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def ask(self, case: Case) -> tuple[int, dict[str, Any]]:
        try:
            rc, out = shim.run(dict(case.env), case.stdin, default_socket=self.socket)
        except Exception as exc:  # shim.run promises never to raise
            self.tracebacks += 1
            return -1, {"raised": repr(exc)}
        if not out.strip():
            return rc, {}
        try:
            body = json.loads(out)
        except ValueError:
            self.wrong.append(f"not JSON: {out[:100]!r}")
            return rc, {}
        if body.get("code") == shim.ERR_INTERNAL:
            self.tracebacks += 1
        return rc, body

    def run(self, case: Case, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        rc, body = self.ask(case)
        code = 0 if rc == 0 else int(body.get("code", -1))
        self.codes[f"{state} {code}"] = self.codes.get(f"{state} {code}", 0) + 1
        allowed = self.allowed(case, state)
        if code not in allowed:
            self.wrong.append(
                f"{state} {case.command} {case.labels or 'valid'}: code {code}, expected {sorted(allowed)}:"
                f" {body.get('msg')} {str(body.get('details'))[:80]}"
            )
        if case.real_pod and code == 0:  # give the address back at once
            env = dict(case.env)
            env[b"CNI_COMMAND"] = b"DEL"
            shim.run(env, case.stdin, default_socket=self.socket)

    @staticmethod
    def allowed(case: Case, state: str) -> set[int]:
        if case.expected is not None:
            return {case.expected}
        later = shim.ERR_NOT_AVAILABLE if case.command == "STATUS" else shim.ERR_TRY_AGAIN_LATER
        if case.command == "CHECK":  # no such container (101) or no such namespace (4)
            up = {shim.ERR_INVALID_ENV, 101}
        else:
            up = {0} if case.command != "ADD" or case.real_pod else {shim.ERR_INVALID_ENV}
        if state == "down":
            return {later}
        if state == "starting":
            return {later} | up
        return up

    def campaign(self, state: str, count: int, real_netns: str | None, between: Any = None) -> None:
        serial = [0]

        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(cases("/run/netns", real_netns, serial))
        def one(case: Case) -> None:
            if between is not None:
                between()
            if state == "starting":
                time.sleep(0.05)  # spread the cases over the restarts
            self.run(case, state)

        one()


def main() -> int:
    sc = Scenario("cni_fuzz", __doc__ or "", iterations=(1, 1), cases=(2400, 300))
    per_state = {
        "up": sc.cases // 2,
        "down": sc.cases // 4,
        "starting": sc.cases - sc.cases // 2 - sc.cases // 4,
    }
    with sc.lab(nodes=1, instance_type=ITYPE, agents=True, agent_env=ENV) as lab:
        fz = Campaign(lab)
        real = lab.layout.pod_netns("fuzz", "real")
        subprocess.run(["ip", "netns", "add", real], check=True)
        poll(lambda: ipam(lab, "node1")["totalIPs"] >= 2, 60)
        pid = fz.agent_pid()

        def still_up() -> None:
            nonlocal pid
            now = fz.agent_pid()
            if now != pid:
                log(f"  the agent died during the up phase (pid {pid} -> {now})")
                fz.deaths += 1
                restart_agent(lab)
                poll(lambda: ipam(lab, "node1")["totalIPs"] >= 2, 60)
                pid = fz.agent_pid()

        log(f"up: {per_state['up']} cases")
        fz.campaign("up", per_state["up"], f"/run/netns/{real}", still_up)
        still_up()
        log(f"down: {per_state['down']} cases")
        stop_agent(lab, "node1")
        fz.campaign("down", per_state["down"], None)
        log(f"starting: {per_state['starting']} cases over agent restarts")
        restarting = threading.Event()

        def restart_loop() -> None:
            # each cycle: no socket yet, then an agent that answers but has no pool, then a ready one (the
            # cases in flight all count as "starting": 11, or the answer of an agent that is up)
            while not restarting.is_set():
                restart_agent(lab)
                poll(lambda: restarting.is_set() or ipam(lab, "node1")["totalIPs"] >= 1, 60)
                if restarting.is_set():
                    return
                time.sleep(0.5)
                try:
                    kill_agent(lab, "node1")
                except AssertionError as exc:
                    log(f"  could not kill the agent: {exc}")

        worker = threading.Thread(target=restart_loop, daemon=True)
        worker.start()
        try:
            fz.campaign("starting", per_state["starting"], None)
        finally:
            restarting.set()
            worker.join(120)
        restart_agent(lab)
        text = lab.layout.agent_log("node1").read_text(errors="replace")
        fz.tracebacks += text.count("Traceback")
        for w in fz.wrong[:20]:
            log(f"WRONG {w}")
        log(f"cases by state: {fz.counts}; answers by state and code: {dict(sorted(fz.codes.items()))}")
    sc.add("cases", sum(fz.counts.values()))
    sc.add("tracebacks", fz.tracebacks)
    sc.add("wrong_codes", len(fz.wrong))
    sc.add("agent_deaths", fz.deaths)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
