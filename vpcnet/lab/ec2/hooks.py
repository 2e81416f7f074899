"""What the namespace fabric implements to follow the emulated EC2 state.

`Cloud` calls these synchronously, under its lock, after the state change and before the API answers, so an
ENI attached through the API is usable in the node as soon as the call returns. A hook that raises fails the
action (InternalError) and the state change is rolled back. Hooks get copies of the objects; they may read
the cloud (its lock is re-entrant) but must not mutate it.
"""

from __future__ import annotations

from typing import Protocol

from vpcnet.lab.ec2.model import Eni, Instance, SecurityGroup


class FabricHooks(Protocol):
    def eni_attached(self, eni: Eni, instance: Instance) -> None:
        """`eni` is now attached to `instance` (eni.attachment says where). Also called by launch_instance
        for the primary ENI (device index 0)."""
        ...

    def eni_detached(self, eni: Eni, instance_id: str) -> None:
        """`eni` was detached from `instance_id` (eni.attachment is None now)."""
        ...

    def eni_changed(self, eni: Eni) -> None:
        """The ENI's addresses, prefixes, SourceDestCheck or security groups changed (attached or not)."""
        ...

    def eni_deleted(self, eni: Eni) -> None:
        """`eni` no longer exists (it was detached before, with its own eni_detached call)."""
        ...

    def branch_associated(self, branch: Eni, trunk: Eni, instance: Instance) -> None:
        """`branch` was associated with `trunk` (attached to `instance`) under branch.trunk_association's
        VLAN id: its traffic is now delivered to that instance."""
        ...

    def branch_disassociated(self, branch: Eni) -> None:
        """`branch` is no longer associated with a trunk (its trunk_association is None now)."""
        ...

    def security_groups_changed(self, groups: list[SecurityGroup]) -> None:
        """A group was created or deleted, or its rules changed: `groups` is every group there is now.
        (Membership changes come as eni_changed: an ENI's groups are on the ENI.)"""
        ...


class NullHooks:
    """No fabric: the state alone (unit tests, a cloud without namespaces)."""

    def eni_attached(self, eni: Eni, instance: Instance) -> None:
        pass

    def eni_detached(self, eni: Eni, instance_id: str) -> None:
        pass

    def eni_changed(self, eni: Eni) -> None:
        pass

    def eni_deleted(self, eni: Eni) -> None:
        pass

    def branch_associated(self, branch: Eni, trunk: Eni, instance: Instance) -> None:
        pass

    def branch_disassociated(self, branch: Eni) -> None:
        pass

    def security_groups_changed(self, groups: list[SecurityGroup]) -> None:
        pass
