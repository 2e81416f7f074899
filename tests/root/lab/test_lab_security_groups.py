"""Security groups enforced by the lab's VPC, with real packets: stateful, per ENI, both directions, groups
referenced by their members' addresses as membership changes. One lab (3 nodes, 2 AZs: node1 and node3 share
a subnet, node2 is routed) for the module; every test puts the nodes' groups back in finally."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from lab_fixture import LabHandle

from vpcnet.lab.fabric import INTERNET_HOST_ADDRESS
from vpcnet.lab.layout import EC2_ENDPOINT_ADDRESS

pytestmark = pytest.mark.root

OPEN = 3.0  # seconds a connection that should open may take on a loaded machine
CLOSED = 1.0  # seconds to wait for an answer that must not come (a dropped SYN is never answered)


def connects(lab: LabHandle, src: str, dst_ip: str, port: int) -> bool:
    """Whether a TCP connection from node src to dst_ip:port opens (the SYN and its SYN-ACK both pass)."""

    def attempt(timeout: float) -> bool:
        try:
            with socket.create_connection((dst_ip, port), timeout=timeout):
                return True
        except OSError:
            return False

    return lab.in_netns(src, lambda: attempt(OPEN))


def refused(lab: LabHandle, src: str, dst_ip: str, port: int) -> bool:
    """A connection that must not open: no answer within CLOSED seconds (dropped, not reset)."""

    def attempt() -> bool:
        try:
            with socket.create_connection((dst_ip, port), timeout=CLOSED):
                return False
        except TimeoutError:
            return True
        except OSError:
            return False  # refused or unreachable: something answered

    return lab.in_netns(src, attempt)


def listen(lab: LabHandle, node: str) -> socket.socket:
    def make() -> socket.socket:
        return socket.create_server(("0.0.0.0", 0), backlog=64)

    return lab.in_netns(node, make)


def primary_eni(lab: LabHandle, node: str) -> dict[str, Any]:
    inst = lab.ec2().describe_instances(InstanceIds=[lab.node(node).instance_id])["Reservations"][0]
    return dict(inst["Instances"][0]["NetworkInterfaces"][0])


def set_groups(lab: LabHandle, node: str, groups: list[str]) -> None:
    eni = primary_eni(lab, node)
    lab.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=groups)


def tcp_from(port: int, *, cidr: str = "", group: str = "") -> list[dict[str, Any]]:
    peer: dict[str, Any] = (
        {"IpRanges": [{"CidrIp": cidr}]} if cidr else {"UserIdGroupPairs": [{"GroupId": group}]}
    )
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **peer}]


@pytest.fixture
def groups(lab: LabHandle) -> Iterator[dict[str, str]]:
    """The nodes' group, and two new groups (web, clients) deleted after; every node back in the nodes'
    group only."""
    ec2 = lab.ec2()
    vpc = lab.info.vpc_id
    node_group = primary_eni(lab, "node1")["Groups"][0]["GroupId"]
    made = {
        name: ec2.create_security_group(GroupName=f"{lab.prefix}-{name}", Description=name, VpcId=vpc)[
            "GroupId"
        ]
        for name in ("web", "clients")
    }
    try:
        yield {"nodes": node_group, **made}
    finally:
        for node in lab.node_names:
            set_groups(lab, node, [node_group])
        for gid in made.values():  # web's rules reference clients: web first
            ec2.delete_security_group(GroupId=gid)


def test_no_ingress_rule_drops_new_connections_and_replies_pass(
    lab: LabHandle, groups: dict[str, str]
) -> None:
    ec2 = lab.ec2()
    n1, n3 = lab.node("node1").primary_ip, lab.node("node3").primary_ip
    server, back = listen(lab, "node3"), listen(lab, "node1")
    port, back_port = server.getsockname()[1], back.getsockname()[1]
    from_n3 = tcp_from(back_port, cidr=f"{n3}/32")
    try:
        assert connects(lab, "node1", n3, port)  # the nodes' group: all among the nodes
        set_groups(lab, "node3", [groups["web"]])  # no ingress rule, all egress
        assert refused(lab, "node1", n3, port)  # bridged (same subnet)
        assert refused(lab, "node2", n3, port)  # routed
        # node3's outbound flows are allowed and their replies pass, routed and bridged alike.
        assert connects(lab, "node3", INTERNET_HOST_ADDRESS, 80)
        assert refused(lab, "node3", n1, back_port)  # node1's group takes the nodes' group only
        ec2.authorize_security_group_ingress(GroupId=groups["nodes"], IpPermissions=from_n3)
        assert connects(lab, "node3", n1, back_port)
        # A rule for one source and one port: that source only, that port only.
        ec2.authorize_security_group_ingress(
            GroupId=groups["web"], IpPermissions=tcp_from(port, cidr=f"{n1}/32")
        )
        assert connects(lab, "node1", n3, port)
        assert refused(lab, "node2", n3, port)
        other = listen(lab, "node3")
        try:
            assert refused(lab, "node1", n3, other.getsockname()[1])
        finally:
            other.close()
        ec2.revoke_security_group_ingress(
            GroupId=groups["web"], IpPermissions=tcp_from(port, cidr=f"{n1}/32")
        )
        assert refused(lab, "node1", n3, port)
    finally:
        server.close()
        back.close()
        current = ec2.describe_security_groups(GroupIds=[groups["nodes"]])["SecurityGroups"][0]
        if any(p["IpProtocol"] == "tcp" for p in current["IpPermissions"]):
            ec2.revoke_security_group_ingress(GroupId=groups["nodes"], IpPermissions=from_n3)


def test_referenced_group_follows_its_members(lab: LabHandle, groups: dict[str, str]) -> None:
    ec2 = lab.ec2()
    n3 = lab.node("node3").primary_ip
    server = listen(lab, "node3")
    port = server.getsockname()[1]
    try:
        set_groups(lab, "node3", [groups["web"]])
        set_groups(lab, "node1", [groups["nodes"], groups["clients"]])
        ec2.authorize_security_group_ingress(
            GroupId=groups["web"], IpPermissions=tcp_from(port, group=groups["clients"])
        )
        assert connects(lab, "node1", n3, port)  # a member
        assert refused(lab, "node2", n3, port)  # not a member
        # A member added later is allowed without authorizing anything again; a member removed is not.
        set_groups(lab, "node2", [groups["nodes"], groups["clients"]])
        assert connects(lab, "node2", n3, port)
        set_groups(lab, "node1", [groups["nodes"]])
        assert refused(lab, "node1", n3, port)
        # Referenced by web's rule: clients cannot go while the reference stands.
        with pytest.raises(ClientError) as err:
            ec2.delete_security_group(GroupId=groups["clients"])
        assert err.value.response["Error"]["Code"] == "DependencyViolation"
    finally:
        server.close()


def test_control_plane_stays_reachable_without_egress_rules(lab: LabHandle, groups: dict[str, str]) -> None:
    ec2 = lab.ec2()
    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.revoke_security_group_egress(GroupId=groups["web"], IpPermissions=everything)
    set_groups(lab, "node3", [groups["web"]])  # no rule at all
    assert refused(lab, "node3", INTERNET_HOST_ADDRESS, 80)
    assert refused(lab, "node3", lab.node("node1").primary_ip, 22)
    # IMDS is never filtered; the lab's EC2 endpoint stays reachable whatever the ENI's groups.
    status, body = lab.imds_get("node3", "/latest/meta-data/instance-id")
    assert status == 200 and body == lab.node("node3").instance_id
    assert connects(lab, "node3", EC2_ENDPOINT_ADDRESS, 80)
