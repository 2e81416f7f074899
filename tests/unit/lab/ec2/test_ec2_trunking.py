"""Trunk and branch ENIs through boto3: the calls the VPC resource controller makes, and what EC2 refuses."""

from __future__ import annotations

from pathlib import Path

from ec2lab import Endpoint, Lab, error_code

from vpcnet.ipam.limits import instance_limits
from vpcnet.lab.ec2.state import Cloud


def _eni(ep: Endpoint, interface_type: str = "interface", subnet: str | None = None) -> str:
    r = ep.client.create_network_interface(
        SubnetId=subnet or ep.lab.subnet_a.id, InterfaceType=interface_type
    )
    return str(r["NetworkInterface"]["NetworkInterfaceId"])


def _trunk_on(ep: Endpoint, instance_type: str = "m5.large") -> tuple[str, str]:
    """(instance id, trunk ENI id attached to it at device index 1)."""
    inst = ep.cloud.launch_instance(instance_type, ep.lab.subnet_a.id)
    trunk = _eni(ep, "trunk")
    ep.client.attach_network_interface(NetworkInterfaceId=trunk, InstanceId=inst.id, DeviceIndex=1)
    return inst.id, trunk


def test_trunk_and_branch_types_as_describe_reports_them(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, trunk = _trunk_on(endpoint)
    branch = _eni(endpoint, "branch")
    found = c.describe_network_interfaces(Filters=[{"Name": "interface-type", "Values": ["trunk", "branch"]}])
    assert {(e["NetworkInterfaceId"], e["InterfaceType"]) for e in found["NetworkInterfaces"]} == {
        (trunk, "trunk"),
        (branch, "branch"),
    }


def test_associate_describe_disassociate(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, trunk = _trunk_on(endpoint)
    branch = _eni(endpoint, "branch")
    assoc = c.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=1)[
        "InterfaceAssociation"
    ]
    assert assoc["AssociationId"].startswith("trunk-assoc-")
    assert (assoc["BranchInterfaceId"], assoc["TrunkInterfaceId"], assoc["VlanId"]) == (branch, trunk, 1)
    assert assoc["InterfaceProtocol"] == "VLAN"
    listed = c.describe_trunk_interface_associations(
        Filters=[{"Name": "trunk-interface-association.trunk-interface-id", "Values": [trunk]}]
    )["InterfaceAssociations"]
    assert listed == [assoc]
    by_id = c.describe_trunk_interface_associations(AssociationIds=[assoc["AssociationId"]])
    assert by_id["InterfaceAssociations"] == [assoc]
    eni = c.describe_network_interfaces(NetworkInterfaceIds=[branch])["NetworkInterfaces"][0]
    assert eni["Status"] == "in-use" and "Attachment" not in eni
    assert c.disassociate_trunk_interface(AssociationId=assoc["AssociationId"])["Return"] is True
    assert c.describe_trunk_interface_associations()["InterfaceAssociations"] == []
    eni = c.describe_network_interfaces(NetworkInterfaceIds=[branch])["NetworkInterfaces"][0]
    assert eni["Status"] == "available"
    code = error_code(c.disassociate_trunk_interface, AssociationId=assoc["AssociationId"])
    assert code == "InvalidAssociationID.NotFound"


def test_branch_limit_of_the_instance_type(endpoint: Endpoint) -> None:
    c = endpoint.client
    limit = instance_limits("c5.large").branch_interfaces
    assert limit == 9  # the VPC resource controller's table
    _, trunk = _trunk_on(endpoint, "c5.large")
    for vlan in range(1, limit + 1):
        c.associate_trunk_interface(
            BranchInterfaceId=_eni(endpoint, "branch"), TrunkInterfaceId=trunk, VlanId=vlan
        )
    extra = _eni(endpoint, "branch")
    code = error_code(
        c.associate_trunk_interface, BranchInterfaceId=extra, TrunkInterfaceId=trunk, VlanId=100
    )
    assert code == "AttachmentLimitExceeded"
    assert len(c.describe_trunk_interface_associations()["InterfaceAssociations"]) == limit


def test_trunk_attach_rules(endpoint: Endpoint) -> None:
    c = endpoint.client
    small = endpoint.cloud.launch_instance("t3.medium", endpoint.lab.subnet_a.id)  # not trunking-compatible
    trunk = _eni(endpoint, "trunk")
    code = error_code(
        c.attach_network_interface, NetworkInterfaceId=trunk, InstanceId=small.id, DeviceIndex=1
    )
    assert code == "InvalidParameterValue"
    inst, _ = _trunk_on(endpoint)
    code = error_code(c.attach_network_interface, NetworkInterfaceId=trunk, InstanceId=inst, DeviceIndex=2)
    assert code == "InvalidParameterValue"  # one trunk per instance
    branch = _eni(endpoint, "branch")
    code = error_code(c.attach_network_interface, NetworkInterfaceId=branch, InstanceId=inst, DeviceIndex=2)
    assert code == "InvalidParameterValue"  # a branch is associated, never attached
    assert endpoint.cloud.eni(trunk).attachment is None and endpoint.cloud.eni(branch).attachment is None


def test_bad_associations_change_nothing(endpoint: Endpoint) -> None:
    c, u = endpoint.client, endpoint.unchecked
    _, trunk = _trunk_on(endpoint)
    branch, plain = _eni(endpoint, "branch"), _eni(endpoint)
    other_az = _eni(endpoint, "branch", endpoint.lab.subnet_b.id)
    loose_trunk = _eni(endpoint, "trunk")
    cases = [
        (dict(BranchInterfaceId=plain, TrunkInterfaceId=trunk, VlanId=1), "InvalidParameterValue"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=plain, VlanId=1), "InvalidParameterValue"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=0), "InvalidParameterValue"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=4095), "InvalidParameterValue"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=trunk), "MissingParameter"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=trunk, GreKey=7), "InvalidParameterValue"),
        (dict(BranchInterfaceId=other_az, TrunkInterfaceId=trunk, VlanId=1), "InvalidParameterValue"),
        (dict(BranchInterfaceId=branch, TrunkInterfaceId=loose_trunk, VlanId=1), "IncorrectState"),
        (
            dict(BranchInterfaceId="eni-0000000000000dead", TrunkInterfaceId=trunk, VlanId=1),
            "InvalidNetworkInterfaceID.NotFound",
        ),
    ]
    for params, code in cases:
        assert error_code(u.associate_trunk_interface, **params) == code, params
    assert c.describe_trunk_interface_associations()["InterfaceAssociations"] == []
    c.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=5)
    second = _eni(endpoint, "branch")
    code = error_code(c.associate_trunk_interface, BranchInterfaceId=second, TrunkInterfaceId=trunk, VlanId=5)
    assert code == "InvalidParameterValue"  # the VLAN id is taken on this trunk
    code = error_code(c.associate_trunk_interface, BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=6)
    assert code == "InvalidNetworkInterface.InUse"
    assert error_code(c.create_network_interface, SubnetId=endpoint.lab.subnet_a.id, InterfaceType="efa") == (
        "InvalidParameterValue"
    )


def test_trunk_with_branches_stays_attached_and_deleting_a_branch_frees_its_vlan(endpoint: Endpoint) -> None:
    c = endpoint.client
    inst, trunk = _trunk_on(endpoint)
    branch = _eni(endpoint, "branch")
    c.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=3)
    attachment = endpoint.cloud.eni(trunk).attachment
    assert attachment is not None
    assert error_code(c.detach_network_interface, AttachmentId=attachment.id) == "OperationNotPermitted"
    c.delete_network_interface(NetworkInterfaceId=branch)  # as the resource controller does, associated
    assert c.describe_trunk_interface_associations()["InterfaceAssociations"] == []
    c.associate_trunk_interface(BranchInterfaceId=_eni(endpoint, "branch"), TrunkInterfaceId=trunk, VlanId=3)
    endpoint.cloud.terminate_instance(inst)
    assert c.describe_trunk_interface_associations()["InterfaceAssociations"] == []


def test_association_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    lab = Lab(Cloud(path))
    inst = lab.cloud.launch_instance("m5.large", lab.subnet_a.id)
    trunk = lab.cloud.create_network_interface(lab.subnet_a.id, interface_type="trunk")
    lab.cloud.attach_network_interface(trunk.id, inst.id, 1)
    branch = lab.cloud.create_network_interface(lab.subnet_a.id, interface_type="branch")
    assoc = lab.cloud.associate_trunk_interface(branch.id, trunk.id, 9).trunk_association
    again = Cloud(path)
    assert again.eni(branch.id).trunk_association == assoc
    assert again.eni(trunk.id).interface_type == "trunk"
