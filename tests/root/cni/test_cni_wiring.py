"""The kernel after ADD and after DEL, through the installed vpcnet-cni and the agent's CNI service, for a
pod on the primary ENI (table main) and one on a secondary ENI (table 2), in namespaces of our own."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from cnienv import ENI_TABLE, INTERNET_IP, NODE_IP, VPC_ROUTER, Node, sh, unique_prefix

from vpcnet.dataplane import nsenter, rtnl
from vpcnet.dataplane.hostnet import apply_host_network, remove_host_network
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.podnet import PodNetwork, PodSpec, VethPodExistence
from vpcnet.testing.memalloc import MemoryAllocator

pytestmark = pytest.mark.root


@pytest.fixture(params=["python", "native"])
def any_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """A node whose vpcnet-cni is the Python launcher, then one with the native client."""
    if request.param == "native" and shutil.which("cc") is None:
        pytest.skip("no C compiler for the native client")
    n = Node(unique_prefix(), tmp_path, native=request.param == "native")
    try:
        n.up()
        yield n
    finally:
        n.down()


def ip_json(*argv: str) -> list[dict[str, Any]]:
    out = sh("ip", "-j", *argv)
    return json.loads(out) if out.strip() else []


def rules(node: Node) -> list[dict[str, Any]]:
    return ip_json("-n", node.netns, "rule", "show")


def pod_rules(node: Node, ip: str) -> list[tuple[int, str, str]]:
    out = []
    for r in rules(node):
        if ip in (r.get("src"), r.get("dst")):
            out.append((r["priority"], "from" if r.get("src") == ip else "to", str(r["table"])))
    return sorted(out)


def host_routes_to(node: Node, ip: str) -> list[dict[str, Any]]:
    return [r for r in ip_json("-n", node.netns, "route", "show", "table", "all") if r.get("dst") == ip]


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json("-n", netns, "link", "show")}


def assert_wired(node: Node, pod_ns: str, pod: str, result: dict[str, Any], table: int) -> str:
    ip = result["ips"][0]["address"].split("/")[0]
    veth = host_veth_name("eni", "default", pod)
    assert [i["name"] for i in result["interfaces"]] == [veth, "eth0"]
    host_links = links(node.netns)
    assert veth in host_links and "UP" in host_links[veth]["flags"]
    host_mac = host_links[veth]["address"]
    assert result["interfaces"][0]["mac"] == host_mac
    # Pod side.
    pod_addrs = ip_json("-n", pod_ns, "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in pod_addrs if a["family"] == "inet"] == [(ip, 32)]
    pod_routes = {
        (r["dst"], r.get("gateway"), r.get("scope")) for r in ip_json("-n", pod_ns, "route", "show")
    }
    assert pod_routes == {("default", "169.254.1.1", None), ("169.254.1.1", None, "link")}
    neigh = ip_json("-n", pod_ns, "neigh", "show", "dev", "eth0")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [("169.254.1.1", host_mac, ["PERMANENT"])]
    # Host side.
    routes = host_routes_to(node, ip)
    assert [(r["dev"], r.get("scope"), r.get("table", "main")) for r in routes] == [(veth, "link", "main")]
    expected = [(512, "to", "main")]
    if table != 254:
        expected.append((1536, "from", str(table)))
    assert pod_rules(node, ip) == expected
    for key, value in (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0")):
        assert nsenter.read_sysctl(f"net/ipv6/conf/{veth}/{key}", node.netns_path) == value
    return ip


def assert_gone(node: Node, ip: str, pod: str) -> None:
    node.drain()
    assert host_veth_name("eni", "default", pod) not in links(node.netns)
    assert host_routes_to(node, ip) == []
    assert pod_rules(node, ip) == []


def test_add_then_del_primary_and_secondary_eni(any_node: Node) -> None:
    node = any_node
    ns_a, ns_b = node.new_pod_netns(), node.new_pod_netns()
    # Fill the primary ENI's four addresses with one pod and three others so pod b lands on device 1.
    code, res_a = node.cni("ADD", "ca", ns_a, "a")
    assert code == 0, res_a
    assert res_a is not None
    for i in range(3):
        node.loop.run(node.allocator.assign(_key(f"filler{i}"), "default", f"filler{i}"))
    code, res_b = node.cni("ADD", "cb", ns_b, "b")
    assert code == 0, res_b
    assert res_b is not None
    ip_a = assert_wired(node, ns_a, "a", res_a, 254)
    ip_b = assert_wired(node, ns_b, "b", res_b, ENI_TABLE)
    assert ip_a.startswith("10.0.1.") and ip_b.startswith("10.0.2.")
    # Node level: loose rp_filter, forwarding, SNAT and connmark chains.
    assert nsenter.read_sysctl("net/ipv4/conf/eth0/rp_filter", node.netns_path) == "2"
    assert nsenter.read_sysctl("net/ipv4/ip_forward", node.netns_path) == "1"
    nat = sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat")
    assert f"-j SNAT --to-source {NODE_IP} --random-fully" in nat
    assert "-A PREROUTING -i eni+" in nat
    # As on EKS, and exactly as iptables-save prints it (what the apply compares against, to add it once).
    restore = '-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x80'
    assert f"{restore} --ctmask 0x80\n" in nat and nat.count(restore) == 1
    assert any(r.get("fwmark") == "0x80" and r["priority"] == 1024 for r in rules(node))
    # The socket is root-only.
    assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600
    # Traffic: pod to pod on the node, pod to the VPC router (no SNAT), pod to the internet (SNAT).
    sh("ip", "netns", "exec", ns_a, "busybox", "ping", "-c1", "-W2", ip_b)
    sh("ip", "netns", "exec", ns_b, "busybox", "ping", "-c1", "-W2", VPC_ROUTER)
    assert seen_source(node, ns_a, VPC_ROUTER) == ip_a
    assert seen_source(node, ns_a, INTERNET_IP) == NODE_IP
    assert seen_source(node, ns_b, INTERNET_IP) == NODE_IP
    # CHECK agrees with the kernel.
    conf = {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni", "prevResult": res_a}
    assert node.cni("CHECK", "ca", ns_a, "a", conf=conf) == (0, None)
    # DEL: nothing left, and the addresses are back.
    assert node.cni("DEL", "ca", ns_a, "a", conf=conf) == (0, None)
    assert node.cni("DEL", "cb", ns_b, "b") == (0, None)
    assert_gone(node, ip_a, "a")
    assert_gone(node, ip_b, "b")
    assert "eth0" not in links(ns_a) and "eth0" not in links(ns_b)
    assert {a.address for a in node.allocator.assigned.values()} == {
        IPv4Address(f"10.0.1.{11 + i}") for i in range(3)
    }
    # CHECK after DEL reports the difference.
    code, err = node.cni("CHECK", "ca", ns_a, "a", conf=conf)
    assert code == 1 and err is not None and err["code"] == 101


def _key(container: str) -> Any:
    from vpcnet.ipam.types import IpamKey

    return IpamKey("vpcnet", container, "eth0")


def seen_source(node: Node, pod_ns: str, target: str) -> str:
    """The source address a UDP datagram from the pod carries when it reaches target (in the vpc ns)."""
    listener = subprocess.Popen(
        [
            "ip", "netns", "exec", node.vpc, "python3", "-c",
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(({target!r},9999)); s.settimeout(10)\n"
            "print('ready', flush=True)\n"
            "print(s.recvfrom(100)[1][0], flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        sender = (
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(20):\n"
            f" s.sendto(b'x',({target!r},9999)); time.sleep(0.1)"
        )
        sender_proc = subprocess.Popen(["ip", "netns", "exec", pod_ns, "python3", "-c", sender])
        source = listener.stdout.readline().strip()
        sender_proc.kill()
        sender_proc.wait()
        return source
    finally:
        listener.kill()
        listener.wait()


def test_add_is_idempotent_per_key(node: Node) -> None:
    ns = node.new_pod_netns()
    code, first = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and first is not None
    code, again = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and again is not None
    assert again["ips"] == first["ips"]
    ip = assert_wired(node, ns, "web", again, 254)
    assert len(node.allocator.assigned) == 1
    assert node.cni("DEL", "c1", ns, "web") == (0, None)
    assert_gone(node, ip, "web")


def test_del_after_netns_gone_and_agent_restart(node: Node) -> None:
    ns = node.new_pod_netns()
    code, result = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and result is not None
    ip = result["ips"][0]["address"].split("/")[0]
    sh("ip", "netns", "del", ns)  # the runtime removed the sandbox first
    node.stop()
    node.start()  # agent restarted: it keeps the allocator's state (checkpoint), not its own memory
    assert node.cni("DEL", "c1", "", "web") == (0, None)
    assert_gone(node, ip, "web")
    assert node.allocator.assigned == {}
    assert node.cni("DEL", "c1", "", "web") == (0, None)  # and again: still fine
    assert node.cni("DEL", "never-added", "", "ghost") == (0, None)


def test_add_with_missing_netns_is_spec_error_and_leaves_nothing(node: Node) -> None:
    code, err = node.cni("ADD", "c1", f"{node.prefix}nope", "web")
    assert code == 1 and err is not None and err["code"] == 4
    assert node.allocator.assigned == {}
    # A path that exists but is no network namespace (a plain file, a pid namespace) is bad environment too.
    for path in ("../../proc/version", "../../proc/self/ns/pid"):
        code, err = node.cni("ADD", "c1", path, "web")
        assert code == 1 and err is not None and err["code"] == 4, err
        assert err["msg"] == "CNI_NETNS is not a network namespace", err
    assert node.allocator.assigned == {}
    assert host_veth_name("eni", "default", "web") not in links(node.netns)


def test_agent_down_is_try_again_later(node: Node) -> None:
    ns = node.new_pod_netns()
    node.stop()
    code, err = node.cni("ADD", "c1", ns, "web")
    assert code == 1 and err is not None and err["code"] == 11
    status_conf = {"cniVersion": "1.1.0", "name": "vpcnet", "type": "vpcnet-cni"}
    code, err = node.cni("STATUS", "", "", "x", conf=status_conf)
    assert code == 1 and err is not None and err["code"] == 50
    node.start()
    node.allocator.is_ready = False
    code, err = node.cni("STATUS", "", "", "x", conf=status_conf)
    assert code == 1 and err is not None and err["code"] == 50
    code, err = node.cni("ADD", "c1", ns, "web")
    assert code == 1 and err is not None and err["code"] == 11
    node.allocator.is_ready = True
    assert node.cni("STATUS", "", "", "x", conf=status_conf) == (0, None)


def test_failure_part_way_rolls_back_everything(node: Node) -> None:
    """The kernel refuses the last message of ADD (a route through an interface that does not exist): the
    veth, the pod's route and rules and the address all go."""
    assert node.service is not None
    original = PodNetwork._host_side_messages

    def with_refused_route(self: PodNetwork, spec: PodSpec, host_index: int) -> list[rtnl.Message]:
        return [*original(self, spec, host_index), rtnl.replace_route("10.255.255.254", 32, 0x7FFFFFF0)]

    for i in range(4):
        node.loop.run(node.allocator.assign(_key(f"filler{i}"), "default", f"filler{i}"))
    ns = node.new_pod_netns()
    PodNetwork._host_side_messages = with_refused_route  # type: ignore[method-assign]
    try:
        code, err = node.cni("ADD", "c1", ns, "web")
    finally:
        PodNetwork._host_side_messages = original  # type: ignore[method-assign]
    assert code == 1 and err is not None and err["code"] == 102, err
    assert "No such device" in err["details"]
    assert len(node.allocator.assigned) == 4  # the pod's address was released
    assert_gone(node, "10.0.2.10", "web")
    assert "eth0" not in links(ns)


def test_gc_releases_attachments_not_listed(node: Node) -> None:
    ns_a, ns_b = node.new_pod_netns(), node.new_pod_netns()
    assert node.cni("ADD", "ca", ns_a, "a")[0] == 0
    code, res_b = node.cni("ADD", "cb", ns_b, "b")
    assert code == 0 and res_b is not None
    gc = {
        "cniVersion": "1.1.0",
        "name": "vpcnet",
        "type": "vpcnet-cni",
        "cni.dev/valid-attachments": [{"containerID": "ca", "ifname": "eth0"}],
    }
    assert node.cni("GC", "", "", "x", conf=gc) == (0, None)
    assert [k.container_id for k in node.allocator.assigned] == ["ca"]
    assert_gone(node, res_b["ips"][0]["address"].split("/")[0], "b")


def test_host_rules_apply_twice_and_remove(node: Node) -> None:
    cfg = node.host_config()
    before = sh("ip", "netns", "exec", node.netns, "iptables-save")
    node.loop.run(apply_host_network(cfg, node.netns_path))
    after = sh("ip", "netns", "exec", node.netns, "iptables-save")
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("#")]  # noqa: E731
    assert strip(after) == strip(before)  # a second apply changes nothing
    node.loop.run(remove_host_network(cfg, node.netns_path))
    left = sh("ip", "netns", "exec", node.netns, "iptables-save")
    assert "AWS-" not in left
    assert not any(r.get("fwmark") == "0x80" for r in rules(node))


def test_concurrent_adds_and_dels(any_node: Node) -> None:
    """Eight runtimes at once: distinct addresses, every pod wired, then every DEL leaves nothing."""
    from concurrent.futures import ThreadPoolExecutor

    node = any_node
    spaces = [node.new_pod_netns() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: node.cni("ADD", f"c{i}", spaces[i], f"pod{i}"), range(8)))
    assert all(code == 0 for code, _ in results), results
    ips = [res["ips"][0]["address"].split("/")[0] for _, res in results if res is not None]
    assert len(set(ips)) == 8
    for i, (_, res) in enumerate(results):
        assert res is not None
        table = 254 if ips[i].startswith("10.0.1.") else ENI_TABLE
        assert_wired(node, spaces[i], f"pod{i}", res, table)
    with ThreadPoolExecutor(8) as pool:
        dels = list(pool.map(lambda i: node.cni("DEL", f"c{i}", spaces[i], f"pod{i}"), range(8)))
    assert all(d == (0, None) for d in dels), dels
    for i, ip in enumerate(ips):
        assert_gone(node, ip, f"pod{i}")
    assert node.allocator.assigned == {}


def test_stale_from_rule_of_an_earlier_holder_is_replaced(node: Node) -> None:
    """A DEL that never came left `from <ip> lookup 7`; the next pod with that address gets its own table."""
    sh("ip", "-n", node.netns, "rule", "add", "from", "10.0.1.10", "lookup", "7", "priority", "1536")
    ns = node.new_pod_netns()
    code, result = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and result is not None
    assert assert_wired(node, ns, "web", result, 254) == "10.0.1.10"  # no from-rule at all on the primary ENI
    assert node.cni("DEL", "c1", ns, "web") == (0, None)
    assert_gone(node, "10.0.1.10", "web")


def test_late_del_of_an_old_sandbox_keeps_the_new_pod(node: Node) -> None:
    """Pod web re-created in a new sandbox (same veth name) before the old sandbox's DEL arrives."""
    old_ns, new_ns = node.new_pod_netns(), node.new_pod_netns()
    code, old = node.cni("ADD", "old", old_ns, "web")
    assert code == 0 and old is not None
    code, new = node.cni("ADD", "new", new_ns, "web")  # replaces the old sandbox's veth of that name
    assert code == 0 and new is not None
    old_ip = old["ips"][0]["address"].split("/")[0]
    assert node.cni("DEL", "old", old_ns, "web") == (0, None)
    node.drain()
    assert pod_rules(node, old_ip) == []
    assert_wired(node, new_ns, "web", new, 254)  # the new pod keeps its veth, route and rules
    assert node.cni("DEL", "new", new_ns, "web") == (0, None)
    assert_gone(node, new["ips"][0]["address"].split("/")[0], "web")


def test_del_removes_route_and_rules_before_the_veth_goes(node: Node) -> None:
    """The safety of deleting the veth after answering: nothing routes to it once DEL has answered."""
    ns = node.new_pod_netns()
    for i in range(4):  # the pod lands on the secondary ENI: both rules
        node.loop.run(node.allocator.assign(_key(f"filler{i}"), "default", f"filler{i}"))
    code, result = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and result is not None
    ip = assert_wired(node, ns, "web", result, ENI_TABLE)
    held: list[str] = []
    original = PodNetwork.delete_veth_later
    PodNetwork.delete_veth_later = lambda self, name: held.append(name)  # type: ignore[assignment,method-assign,return-value]
    try:
        assert node.cni("DEL", "c1", ns, "web") == (0, None)
    finally:
        PodNetwork.delete_veth_later = original  # type: ignore[method-assign]
    veth = host_veth_name("eni", "default", "web")
    assert held == [veth]
    assert veth in links(node.netns)  # still there: only the reaper would remove it
    assert host_routes_to(node, ip) == []
    assert pod_rules(node, ip) == []
    assert node.service is not None
    node.loop.run(_later(node, veth))
    assert_gone(node, ip, "web")


async def _later(node: Node, veth: str) -> None:
    assert node.service is not None
    await node.service.podnet.delete_veth_later(veth)


def test_check_names_what_is_missing(node: Node) -> None:
    ns = node.new_pod_netns()
    code, result = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and result is not None
    conf = {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni", "prevResult": result}
    ip = result["ips"][0]["address"].split("/")[0]
    sh("ip", "-n", node.netns, "rule", "del", "to", ip, "lookup", "main", "priority", "512")
    code, err = node.cni("CHECK", "c1", ns, "web", conf=conf)
    assert code == 1 and err is not None and err["code"] == 101
    assert f"rule to {ip} lookup main prio 512 is missing" in err["details"]
    other = {**conf, "prevResult": {**result, "ips": [{"address": "10.0.9.9/32"}]}}
    code, err = node.cni("CHECK", "c1", ns, "web", conf=other)
    assert code == 1 and err is not None and "differs" in err["msg"]
    assert node.cni("DEL", "c1", ns, "web", conf=conf) == (0, None)
    assert_gone(node, ip, "web")


def test_veth_pod_existence_for_the_address_manager(node: Node) -> None:
    ns = node.new_pod_netns()
    code, result = node.cni("ADD", "c1", ns, "web")
    assert code == 0 and result is not None
    ip = result["ips"][0]["address"].split("/")[0]
    existence = VethPodExistence("eni", node.netns_path)
    assert node.loop.run(existence.exists(_key("c1"), "default", "web"))
    assert not node.loop.run(existence.exists(_key("c2"), "default", "gone"))
    sh("ip", "netns", "del", ns)  # the pod vanished while the agent was down: its veth went with it
    node.pods.remove(ns)
    deadline = time.monotonic() + 10  # the kernel dismantles a namespace asynchronously
    while host_veth_name("eni", "default", "web") in links(node.netns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not node.loop.run(existence.exists(_key("c1"), "default", "web"))
    assert pod_rules(node, ip) == [(512, "to", "main")]  # what the vanished pod left
    node.loop.run(existence.prune(IPv4Address(ip)))
    assert pod_rules(node, ip) == []


def node_default_routes(node: Node) -> list[dict[str, Any]]:
    return [
        r for r in ip_json("-n", node.netns, "route", "show", "table", "all") if r.get("dst") == "default"
    ]


def test_the_nodes_own_namespace_is_refused_and_left_alone(node: Node) -> None:
    """Defect 5: CNI_NETNS naming the node's namespace replaced the node's default route. Refused (4),
    nothing changes, no address is taken."""
    before = node_default_routes(node), rules(node), sorted(links(node.netns))
    # /run/netns/<node>: the node's own namespace (eth7: as in the report, no clash with the node's eth0)
    code, err = node.cni("ADD", "c1", node.netns, "web", ifname="eth7")
    assert code == 1 and err is not None and err["code"] == 4, err
    assert "node's own network namespace" in err["msg"], err
    node.drain()
    assert (node_default_routes(node), rules(node), sorted(links(node.netns))) == before
    assert node.allocator.assigned == {}


def test_a_fifo_as_netns_neither_hangs_the_agent_nor_takes_an_address(node: Node) -> None:
    """Defect 4: a FIFO as CNI_NETNS was opened with a blocking open() on the event loop: every request
    stopped. Now it is refused (4) at once, and other pods are served meanwhile."""
    import concurrent.futures

    fifo = node.tmp / "fifo"
    os.mkfifo(fifo)
    ns = node.new_pod_netns()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        stuck = ex.submit(node.cni, "ADD", "c-fifo", f"../..{fifo}", "fifo")
        try:
            code, result = ex.submit(node.cni, "ADD", "c1", ns, "web").result(timeout=30)
            assert code == 0 and result is not None, result
            code, err = stuck.result(timeout=30)
        finally:
            if not stuck.done():  # the old code: unblock the agent's open() so the test can end
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert code == 1 and err is not None and err["code"] == 4, err
    assert [a.pod_name for a in node.allocator.assigned.values()] == ["web"]
    assert node.cni("DEL", "c1", ns, "web") == (0, None)


def test_stale_del_after_a_restart_keeps_the_live_pod(node: Node) -> None:
    """Defect 6: after a restart the agent's memory is empty; a DEL for a container nobody knows, whose
    prevResult names a live pod's address, removed that pod's rules at 512 and 1536. The allocator (the
    checkpoint) says the address is held: it is left alone."""
    ns = node.new_pod_netns()
    node.allocator = MemoryAllocator.from_ranges([("10.0.2.0/24", 4, 1)])  # a secondary ENI: both rules
    node.stop()
    node.start()
    code, live = node.cni("ADD", "live", ns, "web")
    assert code == 0 and live is not None
    node.stop()
    node.start()  # restarted: only the allocator's state survives
    stale = {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni", "prevResult": live}
    assert node.cni("DEL", "gone", "", "old-web", conf=stale) == (0, None)
    node.drain()
    assert_wired(node, ns, "web", live, ENI_TABLE)
    assert node.cni("DEL", "live", ns, "web") == (0, None)
    assert_gone(node, live["ips"][0]["address"].split("/")[0], "web")
