"""The lab's VPC with real packets: one lab (3 nodes, 2 AZs) shared by the module. Tests that change the
lab (ENIs, addresses, source/dest check) undo their changes in finally."""

from __future__ import annotations

import http.client
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabHandle, recv_or_none

from vpcnet.lab.ec2.auth import LAB_CREDENTIALS
from vpcnet.lab.fabric import INTERNET_HOST_ADDRESS

pytestmark = pytest.mark.root


def ping(lab: LabHandle, node: str, dst: str) -> bool:
    return lab.exec(node, "busybox", "ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0


def udp_delivered(lab: LabHandle, src: str, dst: str, dst_ip: str, src_ip: str | None = None) -> str | None:
    """Send one datagram from node src (optionally from a spoofed address) to dst_ip, listening in node dst:
    the source address the receiver saw, or None if nothing arrived."""
    listener = lab.udp_listen(dst)
    try:
        port = listener.getsockname()[1]
        payload = secrets.token_bytes(8)
        lab.udp_send(src, dst_ip, port, payload, src_ip=src_ip)
        got = recv_or_none(listener, timeout=1.0)
        if got is None:
            return None
        assert got[0] == payload
        return got[1]
    finally:
        listener.close()


def arp_answer(lab: LabHandle, node: str, ip: str) -> str | None:
    """The MAC an ARP request for ip from the node's eth0 gets as answer, or None."""
    out = lab.exec(node, "busybox", "arping", "-c", "1", "-w", "1", "-I", "eth0", ip, check=False)
    if out.returncode != 0:
        return None
    match = re.search(r"\[([0-9a-fA-F:]{17})\]", out.stdout)
    return match.group(1).lower() if match else None


def test_same_az_nodes_reach_each_other_at_l2(lab: LabHandle) -> None:
    a, c = lab.node("node1"), lab.node("node3")
    assert a.subnet_id == c.subnet_id
    assert udp_delivered(lab, "node1", "node3", c.primary_ip) == a.primary_ip
    assert ping(lab, "node3", a.primary_ip)
    # One L2 segment: node1 learnt node3's own MAC, not the router's.
    neigh = json.loads(lab.exec("node1", "ip", "-json", "neigh", "show", c.primary_ip).stdout)
    enis = {e["device_index"]: e for e in _enis(lab, "node3")}
    assert neigh and neigh[0]["lladdr"] == enis[0]["mac"]


def test_nodes_in_other_az_reach_each_other_through_the_router(lab: LabHandle) -> None:
    a, b = lab.node("node1"), lab.node("node2")
    assert a.az != b.az and a.subnet_id != b.subnet_id
    assert udp_delivered(lab, "node1", "node2", b.primary_ip) == a.primary_ip
    assert ping(lab, "node2", a.primary_ip)
    trace = lab.exec("node1", "ip", "route", "get", b.primary_ip).stdout
    assert "via" in trace  # through the subnet's router (.1)


def test_internet_host_sees_the_node_address(lab: LabHandle) -> None:
    a = lab.node("node2")
    assert udp_delivered(lab, "node2", "inet", INTERNET_HOST_ADDRESS) == a.primary_ip
    assert ping(lab, "node1", INTERNET_HOST_ADDRESS)

    def fetch() -> str:
        conn = http.client.HTTPConnection(INTERNET_HOST_ADDRESS, 80, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode().strip()
        finally:
            conn.close()

    assert lab.info.endpoints["internet_http"] == f"http://{INTERNET_HOST_ADDRESS}"
    assert lab.in_netns("node3", fetch) == lab.node("node3").primary_ip  # the web page says who called


def test_unassigned_address_is_dropped(lab: LabHandle) -> None:
    # An address in node1's subnet that no ENI holds, configured on node3 anyway: the VPC still drops it,
    # from the same subnet (no ARP answer) and from the other one (the router has no next hop).
    stray = "10.0.9.9"
    lab.exec("node3", "ip", "addr", "add", f"{stray}/32", "dev", "eth0")
    try:
        assert arp_answer(lab, "node1", stray) is None
        assert not ping(lab, "node1", stray)
        assert udp_delivered(lab, "node2", "node3", stray) is None
        assert udp_delivered(lab, "node1", "node3", stray) is None
    finally:
        lab.exec("node3", "ip", "addr", "del", f"{stray}/32", "dev", "eth0")


def test_vpc_delivers_an_address_only_to_the_eni_that_holds_it(lab: LabHandle) -> None:
    ec2 = lab.ec2()
    owner = _enis(lab, "node3")[0]
    ip = ec2.assign_private_ip_addresses(NetworkInterfaceId=owner["id"], SecondaryPrivateIpAddressCount=1)[
        "AssignedPrivateIpAddresses"
    ][0]["PrivateIpAddress"]
    try:
        # node1 claims the address node3's ENI holds: the VPC still sends it to node3 only.
        lab.exec("node1", "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        assert udp_delivered(lab, "node2", "node1", ip) is None
        lab.exec("node1", "ip", "addr", "del", f"{ip}/32", "dev", "eth0")
        # Not configured on node3 yet (like a pod address): the VPC answers ARP for it anyway, with
        # node3's MAC; once node3 holds it, it is reachable from both subnets.
        assert arp_answer(lab, "node1", ip) == owner["mac"]
        lab.exec("node3", "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        assert udp_delivered(lab, "node2", "node3", ip) == lab.node("node2").primary_ip
        assert udp_delivered(lab, "node1", "node3", ip) == lab.node("node1").primary_ip
        # A secondary address passes node3's source check (as a pod's address does).
        assert udp_delivered(lab, "node3", "node2", lab.node("node2").primary_ip, src_ip=ip) == ip
    finally:
        lab.exec("node1", "ip", "addr", "del", f"{ip}/32", "dev", "eth0", check=False)
        lab.exec("node3", "ip", "addr", "del", f"{ip}/32", "dev", "eth0", check=False)
        ec2.unassign_private_ip_addresses(NetworkInterfaceId=owner["id"], PrivateIpAddresses=[ip])
    # Unassigned again: dropped again.
    assert udp_delivered(lab, "node2", "node3", ip) is None


def node_group(lab: LabHandle) -> str:
    """The lab nodes' security group (on every node's primary ENI)."""
    inst = lab.ec2().describe_instances(InstanceIds=[lab.node("node1").instance_id])
    return str(inst["Reservations"][0]["Instances"][0]["SecurityGroups"][0]["GroupId"])


def test_source_dest_check(lab: LabHandle) -> None:
    ec2 = lab.ec2()
    eni = _enis(lab, "node1")[0]
    spoofed = "10.0.7.7"  # held by nobody
    spoofed_other = lab.node("node2").primary_ip  # held by someone else
    assert udp_delivered(lab, "node1", "node3", lab.node("node3").primary_ip, src_ip=spoofed) is None
    assert udp_delivered(lab, "node1", "node2", lab.node("node2").primary_ip, src_ip=spoofed) is None
    assert udp_delivered(lab, "node1", "inet", INTERNET_HOST_ADDRESS, src_ip=spoofed_other) is None
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["id"], SourceDestCheck={"Value": False})
    try:
        assert not _enis(lab, "node1")[0]["source_dest_check"]
        # Past the check, the receivers' security group (the nodes' own addresses only) drops the source.
        assert udp_delivered(lab, "node1", "node3", lab.node("node3").primary_ip, src_ip=spoofed) is None
        group = node_group(lab)
        spoofed_in = [
            {"IpProtocol": "udp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": f"{spoofed}/32"}]}
        ]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=spoofed_in)
        try:
            assert (
                udp_delivered(lab, "node1", "node3", lab.node("node3").primary_ip, src_ip=spoofed) == spoofed
            )
            assert (
                udp_delivered(lab, "node1", "node2", lab.node("node2").primary_ip, src_ip=spoofed) == spoofed
            )
        finally:
            ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=spoofed_in)
    finally:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["id"], SourceDestCheck={"Value": True})
    assert udp_delivered(lab, "node1", "node3", lab.node("node3").primary_ip, src_ip=spoofed) is None
    # Other nodes keep their check while node1's is off (per ENI).


@pytest.fixture
def extra_eni(lab: LabHandle) -> Iterator[dict[str, Any]]:
    """An ENI created and attached to node1 at device index 1 through boto3; detached and deleted after."""
    ec2 = lab.ec2()
    node = lab.node("node1")
    # In the nodes' group, as ipamd creates its ENIs (the VPC's default group takes nothing from the nodes).
    eni = ec2.create_network_interface(
        SubnetId=node.subnet_id, Description="lab test", Groups=[node_group(lab)]
    )["NetworkInterface"]
    att = ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance_id, DeviceIndex=1
    )
    try:
        yield {**eni, "AttachmentId": att["AttachmentId"]}
    finally:
        lab.exec("node1", "ip", "rule", "del", "table", "2", check=False)
        lab.exec("node1", "ip", "rule", "del", "table", "2", check=False)
        current = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni["NetworkInterfaceId"]])
        if current["NetworkInterfaces"][0].get("Attachment"):
            ec2.detach_network_interface(AttachmentId=att["AttachmentId"], Force=True)
        ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])


def test_attached_eni_is_usable_at_once(lab: LabHandle, extra_eni: dict[str, Any]) -> None:
    ec2 = lab.ec2()
    eni_id, mac, primary = (
        extra_eni["NetworkInterfaceId"],
        extra_eni["MacAddress"],
        extra_eni["PrivateIpAddress"],
    )
    # Hot-plugged: present in the node with the ENI's MAC as soon as the API call returned.
    link = json.loads(lab.exec("node1", "ip", "-json", "link", "show", "eth1").stdout)[0]
    assert link["address"] == mac
    second = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=1)[
        "AssignedPrivateIpAddresses"
    ][0]["PrivateIpAddress"]
    # The node configures it as ipamd does: address, up, its own route table and a `from` rule.
    for cmd in (
        ["ip", "addr", "add", f"{primary}/20", "dev", "eth1"],
        ["ip", "addr", "add", f"{second}/32", "dev", "eth1"],
        ["ip", "link", "set", "eth1", "up"],
        ["ip", "route", "add", "default", "via", "10.0.0.1", "dev", "eth1", "table", "2"],
        ["ip", "rule", "add", "from", primary, "table", "2"],
        ["ip", "rule", "add", "from", second, "table", "2"],
    ):
        lab.exec("node1", *cmd)
    for target in (primary, second):
        assert udp_delivered(lab, "node2", "node1", target) == lab.node("node2").primary_ip
        assert udp_delivered(lab, "node3", "node1", target) == lab.node("node3").primary_ip
    # IMDS follows: the new MAC with its addresses.
    status, body = lab.imds_get("node1", f"/latest/meta-data/network/interfaces/macs/{mac}/local-ipv4s")
    assert status == 200 and body.split() == [primary, second]
    # Detaching hot-unplugs eth1.
    ec2.detach_network_interface(AttachmentId=extra_eni["AttachmentId"])
    assert lab.exec("node1", "ip", "link", "show", "eth1", check=False).returncode != 0
    assert udp_delivered(lab, "node2", "node1", second) is None


def test_prefix_delegation_addresses_are_delivered(lab: LabHandle) -> None:
    ec2 = lab.ec2()
    eni = _enis(lab, "node2")[0]
    prefix = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni["id"], Ipv4PrefixCount=1)[
        "AssignedIpv4Prefixes"
    ][0]["Ipv4Prefix"]
    member = (
        prefix.split("/")[0].rsplit(".", 1)[0] + "." + str(int(prefix.split("/")[0].rsplit(".", 1)[1]) + 5)
    )
    try:
        lab.exec("node2", "ip", "addr", "add", f"{member}/32", "dev", "eth0")
        assert udp_delivered(lab, "node1", "node2", member) == lab.node("node1").primary_ip
        # A prefix's addresses are the ENI's own: they pass the source check (pods send from them).
        assert udp_delivered(lab, "node2", "node1", lab.node("node1").primary_ip, src_ip=member) == member
    finally:
        lab.exec("node2", "ip", "addr", "del", f"{member}/32", "dev", "eth0", check=False)
        ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni["id"], Ipv4Prefixes=[prefix])
    assert udp_delivered(lab, "node1", "node2", member) is None


def test_imds_from_a_node_is_consistent_with_the_state(lab: LabHandle) -> None:
    for name in ("node1", "node2"):
        node = lab.node(name)
        assert lab.imds_get(name, "/latest/meta-data/instance-id") == (200, node.instance_id)
        assert lab.imds_get(name, "/latest/meta-data/instance-type") == (200, node.instance_type)
        assert lab.imds_get(name, "/latest/meta-data/placement/availability-zone") == (200, node.az)
        status, mac = lab.imds_get(name, "/latest/meta-data/mac")
        assert status == 200 and mac == _enis(lab, name)[0]["mac"]
        status, subnet = lab.imds_get(name, f"/latest/meta-data/network/interfaces/macs/{mac}/subnet-id")
        assert (status, subnet) == (200, node.subnet_id)


def test_ec2_endpoint_reachable_from_nodes_as_on_an_instance(lab: LabHandle) -> None:
    def describe() -> list[str]:
        import boto3

        client = boto3.client(
            "ec2",
            endpoint_url=lab.info.endpoints["ec2"],
            region_name=lab.info.region,
            aws_access_key_id=LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"],  # the lab's endpoint checks signatures
            aws_secret_access_key=LAB_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        reservations = client.describe_instances()["Reservations"]
        return sorted(i["InstanceId"] for r in reservations for i in r["Instances"])

    assert lab.in_netns("node2", describe) == sorted(n.instance_id for n in lab.info.nodes)


def test_etcd_reachable_from_nodes(lab: LabHandle) -> None:
    import http.client

    def health() -> str:
        conn = http.client.HTTPConnection("10.0.255.253", 2379, timeout=5)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    assert json.loads(lab.in_netns("node3", health))["health"] == "true"


def test_nothing_of_the_lab_in_the_host_namespace(lab: LabHandle) -> None:
    import subprocess

    def names(argv: list[str]) -> set[str]:
        return {
            lk["ifname"] for lk in json.loads(subprocess.run(argv, capture_output=True, text=True).stdout)
        }

    host = names(["ip", "-json", "link"])
    lab_links = names(["ip", "-n", lab.layout.vpc_netns, "-json", "link"]) - {"lo"}
    assert lab_links and not host & lab_links
    host_routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert "198.51.100." not in host_routes


def _enis(lab: LabHandle, node: str) -> list[dict[str, Any]]:
    status = lab.status()
    found: list[dict[str, Any]] = next(n["enis"] for n in status["nodes"] if n["name"] == node)
    return found
