"""`vpcnet lab up/status/exec/down` through the CLI: idempotent up, clear errors, a down that leaves nothing
(also of a half-made lab), and a lab daemon that repairs the kernel from the state when it restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from lab_fixture import LabHandle, leftovers, random_prefix, recv_or_none

from vpcnet.cni.install import CONFLIST_NAME
from vpcnet.lab import labctl, netns, procs
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.topology import LabTopology, build_topology

pytestmark = pytest.mark.root

VPCNET = [sys.executable, "-c", "from vpcnet.cli.main import main; main()"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*VPCNET, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"vpcnet {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def prefix() -> Iterator[str]:
    p = random_prefix()
    try:
        yield p
    finally:
        labctl.down(LabLayout(p))


def test_up_is_idempotent_status_exec_and_down_leaves_nothing(prefix: str) -> None:
    layout = LabLayout(prefix)
    first = cli("lab", "up", "--nodes", "2", "--no-agents", "--prefix", prefix)
    assert f"lab {prefix} is up" in first.stdout
    again = cli("lab", "up", "--nodes", "2", "--no-agents", "--prefix", prefix)
    assert "already up" in again.stdout and "nothing changed" in again.stdout

    doc = json.loads(cli("lab", "status", "-o", "json", "--prefix", prefix).stdout)
    # The lab's default datastore is its Kubernetes API: no kube-controllers mirror to run.
    expected = {"etcd": True, "cloudd": True, "branch-controller": True, "kubelet": True}
    assert doc["up"] and doc["processes"] == expected and doc["datastore"] == "kubernetes"
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    n1, n2 = doc["nodes"]
    assert (n1["az"], n2["az"]) == ("us-east-1a", "us-east-1b")
    assert n1["netns"] == f"{prefix}-node1" and n1["instance_type"] == "t3.medium"
    assert n1["instance_id"].startswith("i-") and n1["subnet_cidr"] == "10.0.0.0/20"
    assert n1["enis"][0]["device_index"] == 0 and n1["enis"][0]["primary_ip"] == n1["primary_ip"]
    assert n1["cni_conf_dir"] == str(layout.cni_conf_dir("node1"))
    assert set(doc["endpoints"]) >= {"ec2", "ec2_host", "imds", "etcd", "etcd_host"}
    text = cli("lab", "status", "--prefix", prefix).stdout
    assert text.count(f"{prefix}-node") == 2
    # Per node, where the kubelet reads the config and finds plugins, for calling the plugin by hand.
    for node in ("node1", "node2"):
        line = f"{node}: config {layout.cni_conf_dir(node)}  CNI_PATH={layout.cni_bin_dir(node)}:/usr/lib/cni"
        assert line in text, text

    addr = cli(
        "lab", "exec", "node2", "--prefix", prefix, "--", "ip", "-4", "-o", "addr", "show", "eth0"
    ).stdout
    assert n2["primary_ip"] + "/20" in addr
    assert cli("lab", "exec", "node2", "--prefix", prefix, "--", "false", check=False).returncode == 1

    down = cli("lab", "down", "--prefix", prefix)
    assert "removed" in down.stdout
    assert leftovers(layout) == []
    assert "not up" in cli("lab", "down", "--prefix", prefix).stdout
    assert cli("lab", "status", "--prefix", prefix, check=False).returncode == 3


def test_bad_input_is_refused_and_changes_nothing(prefix: str) -> None:
    layout = LabLayout(prefix)
    bad = cli("lab", "up", "--nodes", "0", "--prefix", prefix, check=False)
    assert bad.returncode == 2 and "--nodes" in bad.stderr
    bad = cli("lab", "up", "--instance-type", "z9.huge", "--prefix", prefix, check=False)
    assert bad.returncode == 2 and "z9.huge" in bad.stderr
    bad = cli("lab", "up", "--prefix", "Bad-Prefix", check=False)
    assert bad.returncode == 2 and "prefix" in bad.stderr
    assert leftovers(layout) == []
    bad = cli("lab", "exec", "node1", "--prefix", prefix, "--", "true", check=False)
    assert bad.returncode == 2 and "not up" in bad.stderr

    cli("lab", "up", "--nodes", "1", "--azs", "1", "--no-agents", "--prefix", prefix)
    before = json.loads(cli("lab", "status", "-o", "json", "--prefix", prefix).stdout)
    other = cli("lab", "up", "--nodes", "3", "--no-agents", "--prefix", prefix, check=False)
    assert other.returncode == 1 and "lab down" in other.stderr
    assert json.loads(cli("lab", "status", "-o", "json", "--prefix", prefix).stdout) == before
    bad = cli("lab", "exec", "node7", "--prefix", prefix, "--", "true", check=False)
    assert bad.returncode == 2 and "node7" in bad.stderr


def test_down_removes_a_half_made_lab(prefix: str) -> None:
    layout = LabLayout(prefix)
    pod_ns = layout.pod_netns("default", "web")
    netns.ip_batch([f"netns add {layout.vpc_netns}", f"netns add {pod_ns}", f"netns add {prefix}-node1"])
    layout.node_dir("node1").mkdir(parents=True)
    (layout.run_dir / "lab.json.partial").write_text("{")
    sleeper = subprocess.Popen(["ip", "netns", "exec", pod_ns, "sleep", "300"])
    try:
        for _ in range(200):  # until the sleeper has entered the namespace
            if netns.pids_in_netns([pod_ns]):
                break
            time.sleep(0.01)
        result = labctl.down(layout)
        assert sorted(result.namespaces) == sorted([layout.vpc_netns, pod_ns, f"{prefix}-node1"])
        sleeper.wait(timeout=5)  # it was living in the lab, so down ended it
        assert leftovers(layout) == []
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_daemon_restart_repairs_the_kernel_from_the_state(lab_factory: Any) -> None:
    with lab_factory(nodes=2) as lab:
        ec2 = lab.ec2()
        node = lab.node("node1")
        eni = ec2.create_network_interface(SubnetId=node.subnet_id)["NetworkInterface"]
        ec2.attach_network_interface(
            NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance_id, DeviceIndex=1
        )
        # Kill the daemon hard, and break the kernel behind its back: node1's eth1 is gone.
        pid = procs.read_pid(labctl.daemon_pid_file(lab.layout), labctl.daemon_marker(lab.layout))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for _ in range(500):  # until the kernel has ended it
            if procs.read_pid(labctl.daemon_pid_file(lab.layout), labctl.daemon_marker(lab.layout)) is None:
                break
            time.sleep(0.01)
        lab.exec("node1", "ip", "link", "del", "eth1")
        result = labctl.up(_same_topology(lab), lab.layout, agents=False)
        assert result.changed == ["lab daemon restarted"]
        assert result.info.endpoints == lab.info.endpoints  # the host-side endpoint keeps its port
        lab = LabHandle(lab.layout, result.info)
        # The state survived, and the fabric put eth1 back with the ENI's MAC.
        link = json.loads(lab.exec("node1", "ip", "-json", "link", "show", "eth1").stdout)[0]
        assert link["address"] == eni["MacAddress"]
        assert [e["id"] for e in _enis(lab, "node1")][1] == eni["NetworkInterfaceId"]
        listener = lab.udp_listen("node1")
        try:
            lab.udp_send("node2", node.primary_ip, listener.getsockname()[1], b"hi")
            assert recv_or_none(listener) == (b"hi", lab.node("node2").primary_ip)
        finally:
            listener.close()
        # And it follows the API again.
        ec2.detach_network_interface(AttachmentId=_attachment(ec2, eni["NetworkInterfaceId"]))
        assert lab.exec("node1", "ip", "link", "show", "eth1", check=False).returncode != 0


def _same_topology(lab: LabHandle) -> LabTopology:
    azs = len({n["az"] for n in lab.info.subnets.values()})
    return build_topology(nodes=len(lab.info.nodes), azs=azs, instance_type=lab.info.nodes[0].instance_type)


def _attachment(ec2: Any, eni_id: str) -> str:
    desc = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
    return str(desc["NetworkInterfaces"][0]["Attachment"]["AttachmentId"])


def _enis(lab: LabHandle, node: str) -> list[dict[str, object]]:
    status = lab.status()
    found: list[dict[str, object]] = next(n["enis"] for n in status["nodes"] if n["name"] == node)
    return found


def test_node_agents_run_in_their_node_namespace_and_down_stops_them(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent mechanism, with a stand-in agent (a long sleep) so the test does not depend on the agent's
    own health: started in the node's namespace with the lab's environment, restarted by `lab up` when it
    died, stopped by `lab down`."""
    layout = LabLayout(prefix)
    seen_env: dict[str, dict[str, str]] = {}

    def stand_in(layout_: LabLayout, node: str, env: Mapping[str, str], restart_backoff: str) -> None:
        seen_env[node] = dict(env)
        procs.spawn(
            # The socket path in the command line is what the pid file is checked against.
            [sys.executable, "-c", "import time; time.sleep(300)", str(layout_.agent_socket(node))],
            log_file=layout_.agent_log(node),
            pid_file=labctl.agent_pid_file(layout_, node),
            in_netns=layout_.node_netns(node),
            env=env,
        )

    def stand_in_install(layout_: LabLayout, info: labctl.LabInfo, nodes: list[str]) -> None:
        # A stand-in agent never answers STATUS: mark the nodes Ready as install-cni would.
        for node in nodes:
            (layout_.cni_conf_dir(node) / CONFLIST_NAME).write_text("{}")

    monkeypatch.setattr(labctl, "spawn_agent", stand_in)  # every agent start, early (gated) or a repair
    monkeypatch.setattr(labctl, "install_cni", stand_in_install)
    topo = build_topology(nodes=2)
    result = labctl.up(topo, layout, agents=True, agent_settings={"VPCNET_MODE": "calico"})
    assert result.info.agents and result.info.agent_settings == {"VPCNET_MODE": "calico"}
    for node in ("node1", "node2"):
        pid = procs.read_pid(labctl.agent_pid_file(layout, node), labctl.agent_marker(layout, node))
        assert pid is not None
        want = f"net:[{netns.netns_inode(layout.node_netns(node))}]"
        for _ in range(500):  # `ip netns exec` enters the namespace, then execs the agent in place
            if os.readlink(f"/proc/{pid}/ns/net") == want and "time.sleep" in _cmdline(pid):
                break
            time.sleep(0.01)
        assert os.readlink(f"/proc/{pid}/ns/net") == want
        assert seen_env[node]["VPCNET_MODE"] == "calico"
        assert seen_env[node]["VPCNET_NODE_NAME"] == node
    assert {n["agent"] for n in labctl.status(layout)["nodes"]} == {"starting"}  # running, no socket yet
    layout.agent_socket("node1").touch()
    assert [n["agent"] for n in labctl.status(layout)["nodes"]] == ["ready", "starting"]
    # Another mode for a running lab is refused; the same settings change nothing.
    with pytest.raises(labctl.LabError, match="VPCNET_MODE=calico"):
        labctl.up(topo, layout, agents=True, agent_settings={"VPCNET_MODE": "vpc"})
    assert labctl.up(topo, layout, agents=True, agent_settings={"VPCNET_MODE": "calico"}).already_up
    # A dead agent is restarted by the next `lab up`.
    dead = procs.read_pid(labctl.agent_pid_file(layout, "node2"), labctl.agent_marker(layout, "node2"))
    assert dead is not None
    procs.kill_pids([dead])
    again = labctl.up(topo, layout, agents=True, agent_settings={"VPCNET_MODE": "calico"})
    assert again.changed == ["agent on node2 restarted"]
    labctl.down(layout)
    assert leftovers(layout) == []


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_killed_agent_is_restarted_and_a_repair_needs_no_flags_repeated(prefix: str) -> None:
    """Issue 14, defect 11: nothing restarted a killed agent; `lab up` again refused without the original
    flags. Now each agent runs under a supervisor (restart with back-off), and a bare `lab up` repairs."""
    layout = LabLayout(prefix)
    made = [
        "--nodes",
        "1",
        "--instance-type",
        "t3.large",
        "-e",
        "WARM_IP_TARGET=2",
        "--restart-backoff",
        "0.2:1",
    ]
    cli("lab", "up", *made, "--prefix", prefix)
    marker = labctl.agent_marker(layout, "node1")
    first = procs.read_pid(labctl.agent_pid_file(layout, "node1"), marker)
    assert first is not None and labctl.agent_supervised(layout, "node1")
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = procs.read_pid(labctl.agent_pid_file(layout, "node1"), marker)
        if now is not None and now != first:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the killed agent was not restarted")
    assert "agent exited (killed by SIGKILL)" in layout.agent_log("node1").read_text()
    bare = cli("lab", "up", "--prefix", prefix)  # no flags: the lab as it was made
    assert "already up (1 nodes)" in bare.stdout, bare.stdout + bare.stderr
    other = cli("lab", "up", "--nodes", "2", "--prefix", prefix, check=False)  # a flag given still counts
    assert other.returncode == 1 and "it has 1 nodes, 2 were asked for" in other.stderr
    # lab down stops the supervisor with its agent (nothing restarts it afterwards).
    now = procs.read_pid(labctl.agent_pid_file(layout, "node1"), marker)
    cli("lab", "down", "--prefix", prefix)
    assert now is not None and not Path(f"/proc/{now}").exists()
    assert leftovers(layout) == []
