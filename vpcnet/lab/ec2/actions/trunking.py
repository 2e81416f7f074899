"""Trunk-interface actions: AssociateTrunkInterface, DisassociateTrunkInterface and
DescribeTrunkInterfaceAssociations (the trunk and branch ENIs themselves are made by CreateNetworkInterface
with InterfaceType trunk or branch, in `enis`)."""

from __future__ import annotations

from typing import ClassVar

from vpcnet.lab.ec2.actions.common import Answer, Handler, Params, required
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.listing import Fields, check_filters, matches, paginate
from vpcnet.lab.ec2.model import Eni
from vpcnet.lab.ec2.state import Cloud


def association_answer(branch: Eni) -> Answer:
    """A TrunkInterfaceAssociation as botocore's model names its members."""
    assoc = branch.trunk_association
    if assoc is None:
        raise ValueError(f"{branch.id} is not associated with a trunk")
    return {
        "AssociationId": assoc.id,
        "BranchInterfaceId": branch.id,
        "TrunkInterfaceId": assoc.trunk_eni_id,
        "InterfaceProtocol": "VLAN",
        "VlanId": assoc.vlan_id,
    }


class TrunkingActions:
    FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "trunk-interface-association.branch-interface-id",
            "trunk-interface-association.trunk-interface-id",
            "vlan-id",
        }
    )

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def handlers(self) -> dict[str, Handler]:
        return {
            "AssociateTrunkInterface": self.associate_trunk_interface,
            "DisassociateTrunkInterface": self.disassociate_trunk_interface,
            "DescribeTrunkInterfaceAssociations": self.describe_trunk_interface_associations,
        }

    def associate_trunk_interface(self, p: Params) -> Answer:
        branch = self.cloud.associate_trunk_interface(
            required(p, "BranchInterfaceId"),
            required(p, "TrunkInterfaceId"),
            p.get("VlanId"),
            p.get("GreKey"),
        )
        return {"InterfaceAssociation": association_answer(branch), "ClientToken": p.get("ClientToken")}

    def disassociate_trunk_interface(self, p: Params) -> Answer:
        self.cloud.disassociate_trunk_interface(required(p, "AssociationId"))
        return {"Return": True, "ClientToken": p.get("ClientToken")}

    @staticmethod
    def _fields(branch: Eni) -> Fields:
        assoc = branch.trunk_association
        assert assoc is not None
        return {
            "trunk-interface-association.branch-interface-id": [branch.id],
            "trunk-interface-association.trunk-interface-id": [assoc.trunk_eni_id],
            "vlan-id": [str(assoc.vlan_id)],
        }

    def describe_trunk_interface_associations(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.FILTERS)
        ids = list(p.get("AssociationIds", []))
        branches = self.cloud.trunk_associations()
        if ids:
            by_id = {b.trunk_association.id: b for b in branches if b.trunk_association is not None}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise Ec2Error(
                    "InvalidAssociationID.NotFound", f"The association ID '{missing[0]}' does not exist"
                )
            branches = [by_id[i] for i in dict.fromkeys(ids)]
        branches = [b for b in branches if matches(self._fields(b), b.tags, filters, self.FILTERS)]
        page, token = paginate(branches, lambda b: b.seq, p, bool(ids), "trunk-assoc", (5, 255))
        return {"InterfaceAssociations": [association_answer(b) for b in page], "NextToken": token}
