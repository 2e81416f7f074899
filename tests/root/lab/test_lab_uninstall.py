"""`vpcnet uninstall` on a lab node whose agent has wired pods and applied a policy: everything the agent put
on the node goes (CNI config and plugin, its chains, sets, nftables table, rules and routes), another
network's state beside it stays, the node's pods still reach each other, a second run removes nothing, and
the other node is untouched."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_fixture import LabCli, LabHandle, pod_doc, running_lab

from vpcnet.agent.uninstall import ours_chain, ours_ipset
from vpcnet.lab import labctl, procs
from vpcnet.lab.probe import ProbeEndpoint, Prober

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: un}\n"
POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b-on-81, namespace: un}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 81}]}]
"""
# Another network's state in node1's namespace, each of a kind uninstall removes when it is ours.
FOREIGN = [
    ["iptables", "-N", "OTHER-FWD"],
    ["iptables", "-A", "FORWARD", "-j", "OTHER-FWD"],
    ["iptables", "-t", "nat", "-N", "OTHER-NAT"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "OTHER-NAT"],
    ["ipset", "create", "other4-set", "hash:ip"],
    ["nft", "add", "table", "inet", "othernet"],
    ["ip", "rule", "add", "fwmark", "0x40/0x40", "lookup", "main", "priority", "1024"],
    ["ip", "route", "add", "blackhole", "10.254.7.0/24", "table", "307", "proto", "static"],
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCli]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with running_lab(nodes=2, agents=True) as handle:
        yield LabCli(handle, tmp_path_factory.mktemp("uninstall"))


def kernel_state(lab: LabHandle, node: str) -> dict[str, list[str]]:
    def out(*argv: str) -> str:
        return str(lab.exec(node, *argv).stdout)

    chains = []
    for command in ("iptables-save", "ip6tables-save"):
        chains += [
            f"{command} {line[1:].split()[0]}" for line in out(command).splitlines() if line[:1] == ":"
        ]
    return {
        "chains": chains,
        "ipsets": out("ipset", "list", "-n").split(),
        "nft": out("nft", "list", "tables").splitlines(),
        "rules": out("ip", "rule", "show").splitlines(),
        "routes": out("ip", "route", "show", "table", "all", "proto", "86").splitlines(),
    }


def ours(state: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        "chains": [c for c in state["chains"] if ours_chain(c.split()[1])],
        "ipsets": [s for s in state["ipsets"] if ours_ipset(s)],
        "nft": [t for t in state["nft"] if t.split()[-1] == "vpcnet"],
        "rules": [r for r in state["rules"] if "fwmark 0x80/0x80" in r],
        "routes": state["routes"],
    }


def pod_ip(lab: LabHandle, name: str) -> ProbeEndpoint:
    ns = lab.layout.pod_netns("un", name)
    out = subprocess.run(["ip", "-n", ns, "-j", "-4", "addr", "show", "eth0"], capture_output=True, text=True)
    return ProbeEndpoint(f"un/{name}", f"/run/netns/{ns}", json.loads(out.stdout)[0]["addr_info"][0]["local"])


def reaches(lab: LabHandle, source: str, target: str) -> bool:
    prober = Prober(80, "TCP", timeout=2.0, attempts=3)
    return asyncio.run(prober.probe(pod_ip(lab, source), pod_ip(lab, target))).ok


def test_uninstall_removes_the_agents_state_and_nothing_else(lab: LabCli) -> None:
    handle, layout = lab.lab, lab.lab.layout
    pods = [pod_doc(name, node, "un") for name, node in (("a", "node1"), ("b", "node2"))]
    lab.apply("---\n".join([NAMESPACE, *pods]), "pods.yaml")
    lab.cli("lab", "sync")
    lab.apply(POLICY, "policy.yaml")
    assert reaches(handle, "a", "b") and not reaches(handle, "b", "a")  # node1 enforces a's policy
    bin_dir, conf_dir = layout.cni_bin_dir("node1"), layout.cni_conf_dir("node1")
    before = ours(kernel_state(handle, "node1"))
    assert before["chains"] and (before["ipsets"] or before["nft"]) and before["rules"], before
    assert (conf_dir / "10-vpcnet.conflist").exists() and (bin_dir / "vpcnet-cni").exists()
    node2_before = ours(kernel_state(handle, "node2"))
    for argv in FOREIGN:
        handle.exec("node1", *argv)
    (conf_dir / "05-other.conflist").write_text("{}\n")
    (bin_dir / "other-plugin").write_text("#!/bin/sh\n")
    foreign_before = kernel_state(handle, "node1")
    # The DaemonSet is gone: the node's supervisor first (it would restart the agent), then the agent.
    for pid_file in (labctl.supervisor_pid_file(layout, "node1"), labctl.agent_pid_file(layout, "node1")):
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    deadline = time.monotonic() + 60
    while labctl.agent_supervised(layout, "node1") or procs.alive(
        labctl.agent_pid_file(layout, "node1"), labctl.agent_marker(layout, "node1")
    ):
        assert time.monotonic() < deadline, "node1's agent did not stop"
        time.sleep(0.1)
    netns = handle.node("node1").netns
    args = ["--netns", netns, "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)]
    from typer.testing import CliRunner

    from vpcnet.cli.main import app

    result = CliRunner().invoke(app, ["uninstall", *args])
    assert result.exit_code == 0, result.output
    after = kernel_state(handle, "node1")
    assert ours(after) == {"chains": [], "ipsets": [], "nft": [], "rules": [], "routes": []}, after
    assert not (conf_dir / "10-vpcnet.conflist").exists() and not (bin_dir / "vpcnet-cni").exists()
    assert not (bin_dir / "vpcnet-shim").exists()
    assert (conf_dir / "05-other.conflist").exists() and (bin_dir / "other-plugin").exists()
    for kind in ("chains", "ipsets", "nft", "rules"):  # the other network's state, all of it, still there
        others = [x for x in foreign_before[kind] if x not in ours(foreign_before)[kind]]
        assert others and all(x in after[kind] for x in others), (kind, others, after[kind])
    assert handle.exec("node1", "ip", "route", "show", "table", "307").stdout.strip()
    # node1's pod still works (its interface and routes are its own until it is rescheduled); node1 no
    # longer enforces a policy
    assert reaches(handle, "a", "b") and reaches(handle, "b", "a")
    again = CliRunner().invoke(app, ["uninstall", *args])
    assert again.exit_code == 0 and "0 item(s) removed" in again.output, again.output
    assert ours(kernel_state(handle, "node2")) == node2_before  # the other node keeps its agent's state


def test_uninstall_refuses_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vpcnet.cli.main import app

    (tmp_path / "file").write_text("")
    (tmp_path / "10-vpcnet.conflist").write_text("{}")
    for args, said in (
        (["--bin-dir", str(tmp_path / "file"), "--conf-dir", str(tmp_path)], "is not a directory"),
        (["--netns", "vpcnet-no-such-ns", "--conf-dir", str(tmp_path)], "no such network namespace"),
    ):
        result = CliRunner().invoke(app, ["uninstall", *args])
        assert result.exit_code == 2 and said in result.output, result.output
    assert (tmp_path / "10-vpcnet.conflist").exists()
