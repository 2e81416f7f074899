"""Security groups: one set per VPC with its default group, and the membership rule for ENIs (a group must
exist in the ENI's VPC). Rules (Authorize/Revoke ingress and egress) and their actions belong here too."""

from __future__ import annotations

from collections.abc import Iterable

from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.errors import Ec2Error, not_found
from vpcnet.lab.ec2.ids import make_id
from vpcnet.lab.ec2.model import SecurityGroup


class SecurityGroups:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, vpc_id: str, name: str, description: str) -> SecurityGroup:
        """A new group in the tables (caller holds a mutation and checked the VPC)."""
        t = self._store.tables
        seq = t.next_seq()
        group = SecurityGroup(
            id=make_id("sg", seq), vpc_id=vpc_id, name=name, description=description, seq=seq
        )
        t.groups[group.id] = group
        return group

    def create(self, vpc_id: str, name: str, description: str = "") -> SecurityGroup:
        t = self._store.tables
        with self._store.mutation():
            t.vpc(vpc_id)
            if any(g.vpc_id == vpc_id and g.name == name for g in t.groups.values()):
                raise Ec2Error(
                    "InvalidGroup.Duplicate", f"The security group '{name}' already exists in {vpc_id}"
                )
            return self.add(vpc_id, name, description)

    def default_of(self, vpc_id: str) -> SecurityGroup:
        """The VPC's group named "default" (created with the VPC)."""
        t = self._store.tables
        with self._store.lock:
            t.vpc(vpc_id)
            for group in t.groups.values():
                if group.vpc_id == vpc_id and group.name == "default":
                    return group
        raise not_found("sg", f"default (in {vpc_id})")

    def check_members(self, vpc_id: str, group_ids: Iterable[str]) -> list[str]:
        """The groups, each once, in order; each must exist in `vpc_id`."""
        result: list[str] = []
        for gid in group_ids:
            group = self._store.tables.groups.get(gid)
            if group is None:
                raise not_found("sg", gid)
            if group.vpc_id != vpc_id:
                raise Ec2Error(
                    "InvalidGroup.NotFound", f"The security group '{gid}' does not exist in VPC '{vpc_id}'"
                )
            if gid not in result:
                result.append(gid)
        return result
