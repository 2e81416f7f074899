"""Tags: EC2's rules for keys and values, the limit per resource, and Create/DeleteTags on any resource."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value, not_found

MAX_TAGS = 50


def check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 128:
            raise invalid_value(f"Tag key {key!r} must be 1 to 128 characters")
        if key.lower().startswith("aws:"):
            raise invalid_value(f"Tag key {key!r} may not start with 'aws:' (reserved)")
        if len(value) > 256:
            raise invalid_value(f"Tag value for key {key!r} must be at most 256 characters")


def add_tags(target: dict[str, str], tags: Mapping[str, str], ident: str) -> None:
    """Merge `tags` into a resource's tags (`ident` names it in errors); nothing changes on an error."""
    check_tags(tags)
    merged = {**target, **tags}
    if len(merged) > MAX_TAGS:
        raise Ec2Error("TagLimitExceeded", f"The maximum number of tags ({MAX_TAGS}) for {ident} is exceeded")
    target.clear()
    target.update(merged)


class Tagging:
    """CreateTags and DeleteTags over every taggable kind of the tables (by the ID's prefix)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _taggable(self, resource_id: str) -> dict[str, str]:
        t = self._store.tables
        kind = resource_id.split("-", 1)[0]
        stores: dict[str, tuple[Mapping[str, Any], str]] = {
            "vpc": (t.vpcs, "vpc"),
            "subnet": (t.subnets, "subnet"),
            "sg": (t.groups, "sg"),
            "i": (t.instances, "instance"),
            "eni": (t.enis, "eni"),
        }
        if kind not in stores or "-" not in resource_id:
            raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
        table, name = stores[kind]
        obj = table.get(resource_id)
        if obj is None:
            raise not_found(name, resource_id)
        tags: dict[str, str] = obj.tags
        return tags

    def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        if not resource_ids:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        with self._store.mutation():
            for rid in resource_ids:
                add_tags(self._taggable(rid), tags, rid)

    def delete_tags(self, resource_ids: Sequence[str], tags: Sequence[tuple[str, str | None]] = ()) -> None:
        """Remove tags; a None value removes the key whatever its value, no tags given removes all."""
        if not resource_ids:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        with self._store.mutation():
            for rid in resource_ids:
                target = self._taggable(rid)
                if not tags:
                    target.clear()
                for key, value in tags:
                    if key in target and (value is None or target[key] == value):
                        del target[key]
