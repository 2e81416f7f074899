"""Checks on one lab node after a fault: a pod's wiring, the agent's view against EC2's, ADD as a runtime
retries it. Shared by the scenarios that drive pods through the node's CNI socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from common import LabHandle, log, poll
from ipamd_lab import agent_view, cni, ec2_enis, ec2_pod_addresses, ipam, kill_agent, pod_netns

from vpcnet.lab import labctl, procs


def retry_add(lab: LabHandle, pod: str, deadline: float, node: str = "node1") -> dict[str, Any] | None:
    """ADD retried while the answer is 11 (as a runtime does); None if it never succeeds."""
    while time.monotonic() < deadline:
        rc, out = cni(lab, node, "ADD", pod)
        if rc == 0:
            return out
        if out.get("code") != 11:
            log(f"  ADD {pod} failed for good: {out}")
            return None
        time.sleep(0.3)
    return None


def wired(lab: LabHandle, pod: str, address: str) -> bool:
    """The pod's eth0 carries its address."""
    out = subprocess.run(
        ["ip", "-n", pod_netns(lab, pod), "-j", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return any(a.get("local") == address for link in json.loads(out or "[]") for a in link["addr_info"])


def ec2_disagreement(lab: LabHandle, timeout: float, node: str = "node1") -> tuple[int, dict[str, Any]]:
    """Waits for the agent's view to equal EC2's and hold still (as ipamd_lab.agreed_with_ec2 does); returns
    how many addresses differ at the end (0 when they agreed) and the agent's last view."""
    last: dict[str, Any] = {"diff": -1, "doc": {}}

    def agreed() -> bool:
        before = ipam(lab, node)
        enis = ec2_enis(lab, node)
        after = ipam(lab, node)
        ec2 = ec2_pod_addresses(lab, node, enis)
        mine = agent_view(after)[1]
        last["diff"], last["doc"] = len(ec2 ^ mine), after
        if ec2 != mine:
            last["detail"] = f"only EC2: {sorted(ec2 - mine)}, only the agent: {sorted(mine - ec2)}"
        return (
            not after.get("ec2InProgress")
            and after["totalIPs"] >= after["targetIPs"]
            and agent_view(before) == agent_view(after)
            and ec2 == mine
        )

    if not poll(agreed, timeout, 0.5):
        log(f"  the agent and EC2 still differ after {timeout:g}s: {last.get('detail', 'not settled')}")
        return max(int(last["diff"]), 0), last["doc"]
    return 0, last["doc"]


def assigned(doc: dict[str, Any]) -> dict[str, Any]:
    """The agent's assigned addresses -> the pod it records for each."""
    return {ip["address"]: ip.get("pod") for e in doc.get("ENIs", []) for ip in e["ips"] if ip["assigned"]}


def host_veths(lab: LabHandle, node: str = "node1", prefix: str = "eni") -> list[str]:
    """The host ends of pods' veths on the node (named with the CNI's veth prefix): what a DEL removes.
    (The lab's ENIs are veths too, named eth<N>.)"""
    links = json.loads(lab.exec(node, "ip", "-j", "link", "show", "type", "veth").stdout or "[]")
    return [link["ifname"] for link in links if link["ifname"].startswith(prefix)]


def restart_agent(lab: LabHandle, node: str = "node1") -> None:
    """Start a dead agent again, as `vpcnet lab up` repairs a node (or a DaemonSet would), without taking the
    machine-wide lab lock that `lab up` holds (another lab's slow `up` would stall the scenario). While the
    node's supervisor lives, it restarts the agent itself (after its back-off): starting a second one would
    run two agents on one socket and orphan the first supervisor, so this waits for its restart instead."""
    marker = labctl.agent_marker(lab.layout, node)
    if labctl.agent_supervised(lab.layout, node):
        if not poll(lambda: procs.alive(labctl.agent_pid_file(lab.layout, node), marker), 60, 0.1):
            raise RuntimeError(f"{node}: the supervisor did not restart the agent within 60 s")
        return
    if not procs.alive(labctl.agent_pid_file(lab.layout, node), marker):
        labctl.start_agent(lab.layout, node, lab.info)


def stop_agent(lab: LabHandle, node: str = "node1") -> None:
    """The node's agent down and staying down (kill -9): its supervisor goes first, or it would start the
    agent again within its back-off and an "agent down" case would meet a live agent. restart_agent then
    starts both again, as `lab up` repairs a node."""
    if labctl.agent_supervised(lab.layout, node):
        pid = int(labctl.supervisor_pid_file(lab.layout, node).read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        if not poll(lambda: not labctl.agent_supervised(lab.layout, node), 10, 0.05):
            raise RuntimeError(f"{node}: the agent's supervisor (pid {pid}) did not die")
    if procs.alive(labctl.agent_pid_file(lab.layout, node), labctl.agent_marker(lab.layout, node)):
        kill_agent(lab, node)
