"""The EC2 calls of security groups for pods, as the VPC resource controller makes them: a trunk ENI per
node (CreateNetworkInterface InterfaceType=trunk, attached at the instance's lowest free device index), a
branch ENI per selected pod (InterfaceType=branch, with the pod's groups), associated with the trunk under a
VLAN id (AssociateTrunkInterface), and the way back (DisassociateTrunkInterface, DeleteNetworkInterface).

Over any `Ec2QueryClient` (boto3 on AWS and against the lab; the simulated cloud in unit tests), so the
retries, backoff and rate limit are the client's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpcnet.cloud.ec2 import Ec2Error, NetworkInterface
from vpcnet.cloud.ec2_query import Ec2QueryClient, eni_from_answer

MAX_DEVICE_INDEX = 100  # the VPC CNI's bound on device indexes (its route tables are index + 1)


@dataclass(frozen=True)
class TrunkAssociation:
    association_id: str
    branch_id: str
    trunk_id: str
    vlan_id: int


def _tag_spec(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": "network-interface", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


class BranchEc2:
    def __init__(self, client: Ec2QueryClient) -> None:
        self.client = client

    async def _enis(self, filters: Mapping[str, Sequence[str]]) -> list[NetworkInterface]:
        params: dict[str, Any] = {"Filters": [{"Name": k, "Values": list(v)} for k, v in filters.items()]}
        out: list[NetworkInterface] = []
        while True:
            page = await self.client.call("DescribeNetworkInterfaces", MaxResults=100, **params)
            out += [eni_from_answer(row) for row in page.get("NetworkInterfaces", [])]
            if not page.get("NextToken"):
                return out
            params["NextToken"] = page["NextToken"]

    async def instance_enis(self, instance_id: str) -> list[NetworkInterface]:
        return await self._enis({"attachment.instance-id": [instance_id]})

    async def trunk_of(self, instance_id: str) -> NetworkInterface | None:
        trunks = [e for e in await self.instance_enis(instance_id) if e.interface_type == "trunk"]
        return trunks[0] if trunks else None

    async def create_trunk(
        self, instance_id: str, subnet_id: str, groups: Sequence[str], tags: Mapping[str, str]
    ) -> NetworkInterface:
        """A trunk ENI attached to the instance at its lowest free device index (deleted again if the
        attach fails: nothing is left half made)."""
        used = {e.attachment.device_index for e in await self.instance_enis(instance_id) if e.attachment}
        free = [i for i in range(1, MAX_DEVICE_INDEX) if i not in used]
        if not free:
            raise Ec2Error(
                "AttachNetworkInterface", "AttachmentLimitExceeded", f"{instance_id}: no device index"
            )
        params: dict[str, Any] = {
            "SubnetId": subnet_id,
            "InterfaceType": "trunk",
            "Description": "trunk ENI (security groups for pods)",
            "TagSpecifications": _tag_spec(tags),
        }
        if groups:
            params["Groups"] = list(groups)
        trunk = eni_from_answer(
            (await self.client.call("CreateNetworkInterface", **params))["NetworkInterface"]
        )
        try:
            await self.client.call(
                "AttachNetworkInterface",
                NetworkInterfaceId=trunk.eni_id,
                InstanceId=instance_id,
                DeviceIndex=free[0],
            )
        except Ec2Error:
            await self.client.call("DeleteNetworkInterface", NetworkInterfaceId=trunk.eni_id)
            raise
        return trunk

    async def branches(self, tags: Mapping[str, str]) -> list[NetworkInterface]:
        """Branch ENIs carrying every one of these tags."""
        filters: dict[str, Sequence[str]] = {"interface-type": ["branch"]}
        filters.update({f"tag:{k}": [v] for k, v in tags.items()})
        return await self._enis(filters)

    async def create_branch(
        self, subnet_id: str, groups: Sequence[str], tags: Mapping[str, str], description: str
    ) -> NetworkInterface:
        out = await self.client.call(
            "CreateNetworkInterface",
            SubnetId=subnet_id,
            InterfaceType="branch",
            Groups=list(groups),
            Description=description,
            TagSpecifications=_tag_spec(tags),
        )
        return eni_from_answer(out["NetworkInterface"])

    async def associations(self, trunk_id: str) -> list[TrunkAssociation]:
        params: dict[str, Any] = {
            "Filters": [{"Name": "trunk-interface-association.trunk-interface-id", "Values": [trunk_id]}]
        }
        out: list[TrunkAssociation] = []
        while True:
            page = await self.client.call("DescribeTrunkInterfaceAssociations", MaxResults=255, **params)
            out += [_association(row) for row in page.get("InterfaceAssociations", [])]
            if not page.get("NextToken"):
                return out
            params["NextToken"] = page["NextToken"]

    async def associate(self, branch_id: str, trunk_id: str, vlan_id: int) -> TrunkAssociation:
        out = await self.client.call(
            "AssociateTrunkInterface", BranchInterfaceId=branch_id, TrunkInterfaceId=trunk_id, VlanId=vlan_id
        )
        return _association(out["InterfaceAssociation"])

    async def delete_branch(self, branch_id: str, association_id: str | None) -> None:
        """Disassociate (when associated) and delete; what is already gone is not an error."""
        if association_id is not None:
            try:
                await self.client.call("DisassociateTrunkInterface", AssociationId=association_id)
            except Ec2Error as exc:
                if exc.code != "InvalidAssociationID.NotFound":
                    raise
        try:
            await self.client.call("DeleteNetworkInterface", NetworkInterfaceId=branch_id)
        except Ec2Error as exc:
            if exc.code != "InvalidNetworkInterfaceID.NotFound":
                raise


def _association(row: Mapping[str, Any]) -> TrunkAssociation:
    return TrunkAssociation(
        association_id=str(row["AssociationId"]),
        branch_id=str(row["BranchInterfaceId"]),
        trunk_id=str(row["TrunkInterfaceId"]),
        vlan_id=int(row.get("VlanId", 0)),
    )
