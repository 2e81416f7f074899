"""Helpers for the ipamd lab tests: pods as namespaces added through the node's CNI socket (the shim's
protocol, as the runtime's exec of vpcnet-cni would), the agent's view, EC2's view and the kernel's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from lab_fixture import LabHandle

from vpcnet.cni import shim
from vpcnet.lab import labctl
from vpcnet.lab.topology import build_topology

NETCONF = json.dumps({"cniVersion": "1.0.0", "name": "aws-cni", "type": "vpcnet-cni", "mtu": 9001}).encode()


def pod_netns(lab: LabHandle, pod: str) -> str:
    return lab.layout.pod_netns("default", pod)


def cni(lab: LabHandle, node: str, command: str, pod: str) -> tuple[int, dict[str, Any]]:
    """One CNI call for pod (made once: its namespace); returns (exit code, the JSON answer)."""
    netns = pod_netns(lab, pod)
    if command == "ADD" and not os.path.exists(f"/run/netns/{netns}"):
        subprocess.run(["ip", "netns", "add", netns], check=True)
    environ = {
        b"CNI_COMMAND": command.encode(),
        b"CNI_CONTAINERID": f"cid-{pod}".encode(),
        b"CNI_NETNS": f"/run/netns/{netns}".encode(),
        b"CNI_IFNAME": b"eth0",
        b"CNI_PATH": b"/usr/lib/cni",
        b"CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}".encode(),
    }
    rc, out = shim.run(environ, NETCONF, default_socket=str(lab.layout.agent_socket(node)))
    return rc, (json.loads(out) if out.strip() else {})


def add_until_done(lab: LabHandle, node: str, pod: str, deadline: float) -> dict[str, Any]:
    """ADD, retried while the agent says 'try again later' (as a runtime does)."""
    while True:
        rc, out = cni(lab, node, "ADD", pod)
        if rc == 0:
            return out
        if out.get("code") != 11 or time.monotonic() > deadline:
            raise AssertionError(f"ADD {pod}: {out}")
        time.sleep(0.3)


def ipam(lab: LabHandle, node: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        lab.exec(
            node, os.path.join(os.path.dirname(os.sys.executable), "vpcnet"), "ipam", "status", "-o", "json"
        ).stdout
    )
    return doc


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            if time.monotonic() > end:
                raise
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def ec2_enis(lab: LabHandle, node: str) -> list[dict[str, Any]]:
    instance = lab.node(node).instance_id
    out = lab.ec2().describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance]}]
    )
    enis: list[dict[str, Any]] = out["NetworkInterfaces"]
    return enis


def ec2_pod_addresses(lab: LabHandle, node: str, enis: list[dict[str, Any]] | None = None) -> set[str]:
    """Addresses for pods on the node's ENIs as EC2 sees them (secondary IPs and prefix members)."""
    import ipaddress

    out: set[str] = set()
    for e in ec2_enis(lab, node) if enis is None else enis:
        for a in e.get("PrivateIpAddresses", []):
            if not a.get("Primary"):
                out.add(a["PrivateIpAddress"])
        for p in e.get("Ipv4Prefixes", []):
            out.update(str(x) for x in ipaddress.IPv4Network(p["Ipv4Prefix"]))
    return out


def unattached_enis_of(lab: LabHandle, node: str) -> list[str]:
    instance = lab.node(node).instance_id
    out = lab.ec2().describe_network_interfaces(
        Filters=[
            {"Name": "tag:node.k8s.amazonaws.com/instance_id", "Values": [instance]},
            {"Name": "status", "Values": ["available"]},
        ]
    )
    return [e["NetworkInterfaceId"] for e in out["NetworkInterfaces"]]


def kill_agent(lab: LabHandle, node: str) -> None:
    pid = int((lab.layout.node_dir(node) / "agent.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_for("the agent to die", lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def restart_agents(lab: LabHandle, instance_type: str, agent_env: dict[str, str], nodes: int = 1) -> None:
    """`vpcnet lab up` again: it finds the lab up and restarts dead agents."""
    topo = build_topology(nodes=nodes, azs=2, instance_type=instance_type)
    labctl.up(topo, lab.layout, agents=True, agent_settings=agent_env)


def set_faults(lab: LabHandle, doc: dict[str, Any]) -> None:
    import urllib.request

    req = urllib.request.Request(
        lab.info.endpoints["ec2_host"].rstrip("/") + "/lab/faults",
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def agent_view(doc: dict[str, Any]) -> tuple[list[str], set[str]]:
    """(ENI ids, addresses for pods) as the agent holds them."""
    return sorted(e["id"] for e in doc["ENIs"]), {ip["address"] for e in doc["ENIs"] for ip in e["ips"]}


def agreed_with_ec2(lab: LabHandle, node: str, timeout: float = 60.0) -> dict[str, Any]:
    """The agent's view once it agrees with EC2's and holds still; fails (saying how they differ) if
    they do not agree within timeout (many reconcile intervals).

    One read of the agent and one of EC2 are not one snapshot: a warm-pool growth that EC2 has applied
    and the agent has not yet recorded (its answer on the way back, or started between the two reads;
    after a restart, growth deferred by the EC2 error backoff can start at any moment) looks like a leak.
    So: the pool at its target with no EC2 action under way, and the agent's view the same before and
    after EC2 is read, and equal to it."""
    seen: list[str] = []

    def agreed() -> bool:
        before = ipam(lab, node)
        enis = ec2_enis(lab, node)
        after = ipam(lab, node)
        ec2 = sorted(e["NetworkInterfaceId"] for e in enis), ec2_pod_addresses(lab, node, enis)
        mine = agent_view(after)
        seen[:] = [
            f"agent ENIs {mine[0]}, EC2 ENIs {ec2[0]}; only EC2 holds {sorted(ec2[1] - mine[1])},"
            f" only the agent holds {sorted(mine[1] - ec2[1])}; total {after['totalIPs']}, target"
            f" {after['targetIPs']}, EC2 actions under way {after.get('ec2InProgress')}",
            json.dumps(after),
        ]
        return (
            not after.get("ec2InProgress")
            and after["totalIPs"] >= after["targetIPs"]
            and agent_view(before) == mine
            and mine == ec2
        )

    end = time.monotonic() + timeout
    while not agreed():
        if time.monotonic() > end:
            raise AssertionError(f"the agent's view and EC2's did not agree within {timeout:g}s: {seen[0]}")
        time.sleep(0.5)
    doc: dict[str, Any] = json.loads(seen[1])
    return doc
