"""Trunk and branch ENIs, as the VPC resource controller uses them for security groups for pods.

A trunk ENI (CreateNetworkInterface InterfaceType=trunk) is attached to an instance like any ENI, but only
to a trunking-compatible instance type and at most one per instance. A branch ENI (InterfaceType=branch) is
never attached: AssociateTrunkInterface ties it to a trunk under a VLAN id, and its traffic then reaches the
trunk's instance tagged with that id. A trunk carries at most the instance type's branch-interface limit.

The association is kept on the branch (`Eni.trunk_association`). Deleting an associated branch drops its
association (the resource controller deletes branches without disassociating them first); a trunk with
branches cannot be detached, and terminating its instance disassociates them (the branches remain, as EC2
leaves unattached ENIs). Error codes are EC2's where EC2 documents one for the case; where it documents
none (the branch limit, a VLAN id already in use on the trunk) the lab answers with the closest of EC2's
codes and a message naming the limit.
"""

from __future__ import annotations

from vpcnet.ipam.limits import instance_limits
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.engine.tables import Tables
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.ids import make_id
from vpcnet.lab.ec2.model import Eni, Instance, TrunkAssociation

INTERFACE_TYPES = ("interface", "trunk", "branch")  # what CreateNetworkInterface takes in the lab
VLAN_IDS = range(1, 4095)  # 802.1Q: 0 and 4095 are reserved


def branches_of(tables: Tables, trunk_id: str) -> list[Eni]:
    """The branch ENIs associated with a trunk, by VLAN id."""
    found = [
        e
        for e in tables.enis.values()
        if e.trunk_association is not None and e.trunk_association.trunk_eni_id == trunk_id
    ]
    return sorted(found, key=lambda e: e.trunk_association.vlan_id if e.trunk_association else 0)


def check_interface_type(interface_type: str) -> None:
    if interface_type not in INTERFACE_TYPES:
        raise invalid_value(
            f"InterfaceType '{interface_type}' is not supported by the lab "
            f"(one of {', '.join(INTERFACE_TYPES)})"
        )


def check_attachable(tables: Tables, eni: Eni, inst: Instance) -> None:
    """AttachNetworkInterface's rules for the interface types: a branch is never attached, a trunk only to
    a trunking-compatible instance that has no trunk yet."""
    if eni.interface_type == "branch":
        raise invalid_value(
            f"Branch network interface {eni.id} cannot be attached to an instance: "
            "associate it with a trunk interface (AssociateTrunkInterface)"
        )
    if eni.interface_type != "trunk":
        return
    limits = instance_limits(inst.instance_type)
    if not limits.trunking:
        raise invalid_value(
            f"Instance type {inst.instance_type} does not support trunk network interfaces ({eni.id})"
        )
    for other in tables.attached_to(inst.id):
        if other.interface_type == "trunk":
            raise invalid_value(f"Instance '{inst.id}' already has a trunk network interface ({other.id})")


def check_detachable(tables: Tables, eni: Eni) -> None:
    """A trunk carrying branches stays attached until they are disassociated."""
    branches = branches_of(tables, eni.id) if eni.interface_type == "trunk" else []
    if branches:
        raise Ec2Error(
            "OperationNotPermitted",
            f"The trunk network interface {eni.id} has {len(branches)} associated branch interface(s) "
            f"({', '.join(b.id for b in branches)}); disassociate them first",
        )


def drop_association(store: Store, branch: Eni) -> None:
    """Forget a branch's association and tell the fabric (caller holds a mutation)."""
    branch.trunk_association = None
    store.hook("branch_disassociated", branch)


class Trunking:
    """Associate/Disassociate/DescribeTrunkInterfaceAssociations on the store's tables."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def associate(self, branch_id: str, trunk_id: str, vlan_id: int | None, gre_key: int | None) -> Eni:
        """AssociateTrunkInterface; returns the branch (its trunk_association is the answer)."""
        t = self._store.tables
        with self._store.mutation():
            branch, trunk = t.eni(branch_id), t.eni(trunk_id)
            if gre_key is not None:
                raise invalid_value("GreKey is not supported by the lab: associate branches by VlanId")
            if vlan_id is None:
                raise Ec2Error("MissingParameter", "The request must contain the parameter VlanId")
            if vlan_id not in VLAN_IDS:
                raise invalid_value(f"VlanId {vlan_id} is out of range (1-4094)")
            if branch.interface_type != "branch":
                raise invalid_value(
                    f"{branch_id} is not a branch network interface ({branch.interface_type})"
                )
            if trunk.interface_type != "trunk":
                raise invalid_value(f"{trunk_id} is not a trunk network interface ({trunk.interface_type})")
            if branch.trunk_association is not None:
                raise Ec2Error(
                    "InvalidNetworkInterface.InUse",
                    f"Interface: {branch_id} is already associated with "
                    f"{branch.trunk_association.trunk_eni_id}",
                )
            if trunk.attachment is None:
                raise Ec2Error("IncorrectState", f"The trunk network interface {trunk_id} is not attached")
            inst = t.instance(trunk.attachment.instance_id)
            if branch.vpc_id != trunk.vpc_id or branch.az != trunk.az:
                raise invalid_value(
                    f"Branch {branch_id} ({branch.az}) and trunk {trunk_id} ({trunk.az}) must be in the same "
                    "VPC and availability zone"
                )
            branches = branches_of(t, trunk_id)
            if any(b.trunk_association and b.trunk_association.vlan_id == vlan_id for b in branches):
                raise invalid_value(f"VlanId {vlan_id} is already in use on trunk {trunk_id}")
            limit = instance_limits(inst.instance_type).branch_interfaces or 0
            if len(branches) >= limit:
                raise Ec2Error(
                    "AttachmentLimitExceeded",
                    f"Branch interface count {len(branches) + 1} exceeds the limit for {inst.instance_type} "
                    f"(a trunk takes {limit})",
                )
            branch.trunk_association = TrunkAssociation(
                id=make_id("trunk-assoc", t.next_seq()), trunk_eni_id=trunk_id, vlan_id=vlan_id
            )
            self._store.hook("branch_associated", branch, trunk, inst)
            return branch

    def disassociate(self, association_id: str) -> None:
        """DisassociateTrunkInterface."""
        with self._store.mutation():
            branch = self._by_association(association_id)
            drop_association(self._store, branch)

    def _by_association(self, association_id: str) -> Eni:
        for eni in self._store.tables.enis.values():
            if eni.trunk_association is not None and eni.trunk_association.id == association_id:
                return eni
        raise Ec2Error(
            "InvalidAssociationID.NotFound", f"The association ID '{association_id}' does not exist"
        )

    def associated(self) -> list[Eni]:
        """Every associated branch, by creation order (the caller copies)."""
        return sorted(
            (e for e in self._store.tables.enis.values() if e.trunk_association is not None),
            key=lambda e: e.seq,
        )
