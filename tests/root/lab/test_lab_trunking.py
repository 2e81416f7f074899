"""Branch ENIs in the lab's VPC with real packets: a branch associated with a node's trunk reaches that node
as `vlan.eth.<VLAN id>` with the branch's MAC; a process there bound to the branch's address is reachable as
the branch's own groups say, apart from the node's; a spoofed source from it is dropped."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lab_fixture import IP_TRANSPARENT, LabHandle, recv_or_none

from vpcnet.lab import labctl, procs
from vpcnet.lab.topology import build_topology

pytestmark = pytest.mark.root

VLAN = 7
TABLE = VLAN + 100  # the VPC CNI's table for a branch pod (VLAN id + 100)
SPOOFED = "10.0.7.7"  # an address no ENI holds


def _connects(lab: LabHandle, src: str, ip: str, port: int, timeout: float) -> bool | None:
    """True: opened; None: no answer in time (dropped); False: refused or unreachable."""

    def attempt() -> bool | None:
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                return True
        except TimeoutError:
            return None
        except OSError:
            return False

    return lab.in_netns(src, attempt)


def _send_from_branch(lab: LabHandle, node: str, src_ip: str, dst: str, port: int, payload: bytes) -> None:
    """A datagram out of the branch's device, from src_ip (held or not: IP_TRANSPARENT sends either)."""

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, f"vlan.eth.{VLAN}".encode())
            s.bind((src_ip, 0))
            s.sendto(payload, (dst, port))

    lab.in_netns(node, send)


@contextlib.contextmanager
def _branch_on_trunk(lab: LabHandle, node: str, groups: list[str]) -> Iterator[dict[str, Any]]:
    """A trunk ENI on the node and a branch ENI with `groups` under VLAN; all removed after."""
    ec2 = lab.ec2()
    info = lab.node(node)
    cleanup: list[Callable[[], object]] = []
    try:
        trunk = ec2.create_network_interface(SubnetId=info.subnet_id, InterfaceType="trunk", Groups=groups)
        trunk_id = trunk["NetworkInterface"]["NetworkInterfaceId"]
        cleanup.append(lambda: ec2.delete_network_interface(NetworkInterfaceId=trunk_id))
        att = ec2.attach_network_interface(
            NetworkInterfaceId=trunk_id, InstanceId=info.instance_id, DeviceIndex=1
        )
        cleanup.append(lambda: ec2.detach_network_interface(AttachmentId=att["AttachmentId"]))
        branch = ec2.create_network_interface(SubnetId=info.subnet_id, InterfaceType="branch", Groups=groups)
        eni = branch["NetworkInterface"]
        cleanup.append(lambda: ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"]))
        assoc = ec2.associate_trunk_interface(
            BranchInterfaceId=eni["NetworkInterfaceId"], TrunkInterfaceId=trunk_id, VlanId=VLAN
        )["InterfaceAssociation"]
        cleanup.append(lambda: ec2.disassociate_trunk_interface(AssociationId=assoc["AssociationId"]))
        yield eni
    finally:
        for undo in reversed(cleanup):
            undo()


def _wire_branch_in_node(lab: LabHandle, node: str, address: str, subnet_cidr: str, gateway: str) -> None:
    """What the CNI would do for a branch pod, in the node itself: the address on the device, a table of
    its own and rules sending the branch's (and the spoof's) traffic out of it."""
    dev = f"vlan.eth.{VLAN}"
    for argv in (
        ["ip", "address", "add", f"{address}/32", "dev", dev],
        ["ip", "link", "set", dev, "up"],
        ["ip", "route", "add", subnet_cidr, "dev", dev, "table", str(TABLE)],
        ["ip", "route", "add", "default", "via", gateway, "dev", dev, "onlink", "table", str(TABLE)],
        ["ip", "rule", "add", "from", address, "lookup", str(TABLE), "priority", "10"],
        ["ip", "rule", "add", "from", SPOOFED, "lookup", str(TABLE), "priority", "10"],
    ):
        lab.exec(node, *argv)


def test_branch_keeps_its_identity_groups_and_source_check(lab_factory: Any) -> None:
    with lab_factory(nodes=2, azs=1, instance_type="m5.large") as lab:
        ec2 = lab.ec2()
        inst = ec2.describe_instances(InstanceIds=[lab.node("node1").instance_id])["Reservations"][0]
        node_group = inst["Instances"][0]["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
        closed = ec2.create_security_group(
            GroupName=f"{lab.prefix}-closed", Description="no ingress", VpcId=lab.info.vpc_id
        )["GroupId"]
        try:
            with _branch_on_trunk(lab, "node1", [node_group]) as eni:
                address, mac = eni["PrivateIpAddress"], eni["MacAddress"]
                links = json.loads(
                    lab.exec("node1", "ip", "-json", "link", "show", f"vlan.eth.{VLAN}").stdout
                )
                assert links[0]["address"] == mac  # the branch's identity in the node
                subnet = ec2.describe_subnets(SubnetIds=[eni["SubnetId"]])["Subnets"][0]["CidrBlock"]
                gateway = subnet.rsplit(".", 1)[0] + ".1"
                _wire_branch_in_node(lab, "node1", address, subnet, gateway)

                server = lab.in_netns("node1", lambda: socket.create_server((address, 0)))
                node_server = lab.in_netns("node1", lambda: socket.create_server(("0.0.0.0", 0)))
                try:
                    port, node_port = server.getsockname()[1], node_server.getsockname()[1]
                    assert _connects(lab, "node2", address, port, 5.0) is True
                    # The branch's own groups: closing them closes the branch, not the node.
                    ec2.modify_network_interface_attribute(
                        NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[closed]
                    )
                    assert _connects(lab, "node2", address, port, 1.0) is None
                    assert _connects(lab, "node2", lab.node("node1").primary_ip, node_port, 5.0) is True
                    ec2.modify_network_interface_attribute(
                        NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[node_group]
                    )
                    assert _connects(lab, "node2", address, port, 5.0) is True
                finally:
                    server.close()
                    node_server.close()

                # Source/dest check on the branch's port: its own address passes, a spoof is dropped.
                listener = lab.udp_listen("node2")
                try:
                    dst, dport = lab.node("node2").primary_ip, listener.getsockname()[1]
                    payload = secrets.token_bytes(8)
                    _send_from_branch(lab, "node1", address, dst, dport, payload)
                    assert recv_or_none(listener, timeout=3.0) == (payload, address)
                    _send_from_branch(lab, "node1", SPOOFED, dst, dport, secrets.token_bytes(8))
                    assert recv_or_none(listener, timeout=1.0) is None
                finally:
                    listener.close()
            # Disassociated and deleted: the device is gone from the node.
            gone = lab.exec("node1", "ip", "link", "show", f"vlan.eth.{VLAN}", check=False)
            assert gone.returncode != 0
        finally:
            ec2.delete_security_group(GroupId=closed)


def test_daemon_restart_puts_a_branch_device_back(lab_factory: Any) -> None:
    with lab_factory(nodes=2, azs=1, instance_type="m5.large") as lab:
        ec2 = lab.ec2()
        group = ec2.describe_instances(InstanceIds=[lab.node("node1").instance_id])["Reservations"][0][
            "Instances"
        ][0]["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
        with _branch_on_trunk(lab, "node1", [group]) as eni:
            pid = procs.read_pid(labctl.daemon_pid_file(lab.layout), labctl.daemon_marker(lab.layout))
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while procs.read_pid(labctl.daemon_pid_file(lab.layout), labctl.daemon_marker(lab.layout)):
                assert time.monotonic() < deadline, "the killed lab daemon did not go"
                time.sleep(0.05)
            lab.exec("node1", "ip", "link", "del", f"vlan.eth.{VLAN}")
            topo = build_topology(nodes=2, azs=1, instance_type="m5.large")
            result = labctl.up(topo, lab.layout, agents=False)
            assert result.changed == ["lab daemon restarted"]
            lab = LabHandle(lab.layout, result.info)
            link = json.loads(lab.exec("node1", "ip", "-json", "link", "show", f"vlan.eth.{VLAN}").stdout)[0]
            assert link["address"] == eni["MacAddress"]
