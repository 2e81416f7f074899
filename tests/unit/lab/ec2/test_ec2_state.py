"""The state's lab-side API and rules, without HTTP."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest
from ec2lab import AZ_A, Lab

from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.state import Cloud


def test_launch_creates_primary_eni(lab: Lab) -> None:
    inst = lab.cloud.launch_instance("t3.medium", lab.subnet_a.id)
    assert inst.id.startswith("i-") and inst.az == AZ_A and inst.state == "running"
    [eni] = lab.cloud.enis_of(inst.id)
    assert eni.id == inst.primary_eni_id and eni.attachment is not None
    assert eni.attachment.device_index == 0 and eni.attachment.delete_on_termination
    assert eni.primary_ip == "10.0.0.4"  # .0-.3 are reserved
    assert eni.mac.startswith("02:")
    assert lab.cloud.instance_by_address("10.0.0.4") == inst
    assert lab.cloud.instance_by_address("10.0.0.5") is None


def test_state_survives_restart_and_ids_stay_unique(state_file: Path) -> None:
    lab = Lab(Cloud(state_file))
    inst = lab.cloud.launch_instance("m5.large", lab.subnet_a.id, tags={"Name": "n1"})
    eni = lab.cloud.create_network_interface(lab.subnet_a.id, secondary_count=3)
    again = Cloud(state_file)
    assert again.snapshot() == lab.cloud.snapshot()
    new = again.create_network_interface(lab.subnet_a.id)
    ids = {e.id for e in again.enis()} | {i.id for i in again.instances()}
    assert len(ids) == 4 and new.id not in {eni.id, inst.primary_eni_id}
    assert len({e.mac for e in again.enis()}) == 3
    assert set(new.private_ips).isdisjoint(eni.private_ips)


def test_terminate_deletes_primary_and_detaches_others(lab: Lab) -> None:
    inst = lab.cloud.launch_instance("m5.large", lab.subnet_a.id)
    eni = lab.cloud.create_network_interface(lab.subnet_a.id)
    lab.cloud.attach_network_interface(eni.id, inst.id, 1)
    lab.cloud.terminate_instance(inst.id)
    assert [e.id for e in lab.cloud.enis()] == [eni.id]
    assert lab.cloud.eni(eni.id).status == "available"
    assert lab.cloud.instance(inst.id).state == "terminated"


def test_bad_subnet_is_refused_and_changes_nothing(lab: Lab) -> None:
    before = lab.cloud.snapshot()
    with pytest.raises(Ec2Error) as e:
        lab.cloud.create_subnet(lab.vpc.id, "10.1.0.0/24", AZ_A)
    assert e.value.code == "InvalidSubnet.Range"
    with pytest.raises(Ec2Error) as e:
        lab.cloud.create_subnet(lab.vpc.id, "10.0.0.128/25", AZ_A)
    assert e.value.code == "InvalidSubnet.Conflict"
    with pytest.raises(Ec2Error) as e:
        lab.cloud.launch_instance("t9.nope", lab.subnet_a.id)
    assert e.value.code == "InvalidInstanceType"
    assert lab.cloud.snapshot() == before


def test_a_corrupt_state_file_is_named(state_file: Path) -> None:
    state_file.write_text('{"version": 1, "region": "us-west-2"}')
    with pytest.raises(ValueError, match=str(state_file)):
        Cloud(state_file)
    state_file.write_text("not json")
    with pytest.raises(ValueError, match="not a usable EC2 lab state"):
        Cloud(state_file)


def test_enis_of_and_lookups(lab: Lab) -> None:
    inst = lab.cloud.launch_instance("c6in.32xlarge", lab.subnet_a.id)
    e1 = lab.cloud.create_network_interface(lab.subnet_a.id, prefix_count=1)
    e2 = lab.cloud.create_network_interface(lab.subnet_a.id)
    lab.cloud.attach_network_interface(e1.id, inst.id, 0, network_card_index=1)
    lab.cloud.attach_network_interface(e2.id, inst.id, 1)
    assert [e.id for e in lab.cloud.enis_of(inst.id)] == [inst.primary_eni_id, e2.id, e1.id]
    inside_prefix = str(IPv4Network(e1.prefixes[0])[3])
    assert lab.cloud.instance_by_address(inside_prefix) == inst
    assert lab.cloud.instance_by_address("not an address") is None
    with pytest.raises(Ec2Error) as e:
        lab.cloud.eni("eni-0nope")
    assert e.value.code == "InvalidNetworkInterfaceID.NotFound"
    lab.cloud.terminate_instance(inst.id)
    assert lab.cloud.instance_by_address(inside_prefix) is None
