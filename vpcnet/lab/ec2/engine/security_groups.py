"""Security groups: one set per VPC with its default group, the membership rule for ENIs (a group of the
ENI's VPC, at most 5 per ENI), and the groups' rules (Authorize/Revoke ingress and egress, EC2's limits and
errors). Every change is told to the fabric (`security_groups_changed`), which enforces the rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vpcnet.lab.ec2.engine.sg_rules import GROUPS_PER_ENI, RULES_PER_DIRECTION, RuleSpec, specs_of
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.engine.tagging import add_tags
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value, not_found
from vpcnet.lab.ec2.ids import make_id
from vpcnet.lab.ec2.model import SecurityGroup, SgRule, initial_rules

GROUPS_PER_VPC = 2500  # EC2's default limit of VPC security groups per region
# The characters EC2 allows in a VPC group's name and description.
_TEXT_RE = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}$")


class SecurityGroups:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _changed(self) -> None:
        """Tell the fabric: rules, membership sets and chains follow the groups."""
        self._store.hook("security_groups_changed", list(self._store.tables.groups.values()))

    def _new_rule_id(self) -> str:
        return make_id("sgr", self._store.tables.next_seq())

    def add(self, vpc_id: str, name: str, description: str) -> SecurityGroup:
        """A new group with EC2's initial rules (caller holds a mutation and checked the VPC)."""
        t = self._store.tables
        seq = t.next_seq()
        group = SecurityGroup(
            id=make_id("sg", seq), vpc_id=vpc_id, name=name, description=description, seq=seq
        )
        group.rules = initial_rules(group, lambda _: self._new_rule_id())
        t.groups[group.id] = group
        self._changed()
        return group

    def create(
        self, vpc_id: str, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> SecurityGroup:
        """CreateSecurityGroup (in a VPC: the lab has no default VPC)."""
        t = self._store.tables
        for what, text in (("GroupName", name), ("GroupDescription", description)):
            if not _TEXT_RE.match(text):
                raise invalid_value(
                    f"Invalid {what} {text!r}: 1 to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$*"
                )
        if name.lower().startswith("sg-"):
            raise invalid_value(f"Group names may not be in the format sg-* ({name!r})")
        if name == "default":
            raise invalid_value("Cannot use reserved security group name: default")
        with self._store.mutation():
            t.vpc(vpc_id)
            if any(g.vpc_id == vpc_id and g.name == name for g in t.groups.values()):
                raise Ec2Error(
                    "InvalidGroup.Duplicate", f"The security group '{name}' already exists for VPC '{vpc_id}'"
                )
            if len(t.groups) >= GROUPS_PER_VPC:
                raise Ec2Error(
                    "SecurityGroupLimitExceeded",
                    f"The maximum number of security groups ({GROUPS_PER_VPC}) has been reached.",
                )
            group = self.add(vpc_id, name, description)
            add_tags(group.tags, tags or {}, group.id)
            return group

    def delete(self, group_id: str) -> None:
        """DeleteSecurityGroup: never the default group, never while an ENI or another group uses it."""
        t = self._store.tables
        with self._store.mutation():
            group = t.group(group_id)
            if group.name == "default":
                raise Ec2Error(
                    "CannotDelete",
                    f'the specified group: "{group_id}" name: "default" cannot be deleted by a user',
                )
            users = [e.id for e in t.enis.values() if group_id in e.security_group_ids]
            referrers = [
                g.id
                for g in t.groups.values()
                if g.id != group_id and any(r.group_id == group_id for r in g.rules)
            ]
            if users or referrers:
                raise Ec2Error(
                    "DependencyViolation",
                    f"resource {group_id} has a dependent object ({', '.join([*users, *referrers])})",
                )
            del t.groups[group_id]
            self._changed()

    def authorize(
        self, group_id: str, egress: bool, permissions: Sequence[Mapping[str, Any]]
    ) -> list[SgRule]:
        """Authorize ingress or egress: all the asked rules are added, or none (EC2's errors)."""
        t = self._store.tables
        with self._store.mutation():
            group = t.group(group_id)
            specs = specs_of(permissions, egress)
            self._check_peers(group, specs)
            have = {r.key() for r in group.rules}
            for spec in specs:
                if spec.key() in have:
                    raise Ec2Error(
                        "InvalidPermission.Duplicate",
                        f'the specified rule "{spec.describe()}, ALLOW" already exists',
                    )
                have.add(spec.key())
            count = sum(1 for r in group.rules if r.egress == egress) + len(specs)
            if count > RULES_PER_DIRECTION:
                raise Ec2Error(
                    "RulesPerSecurityGroupLimitExceeded",
                    f"The maximum number of rules per security group has been reached "
                    f"({RULES_PER_DIRECTION} {'outbound' if egress else 'inbound'} rules).",
                )
            added = [
                SgRule(
                    id=self._new_rule_id(),
                    egress=egress,
                    protocol=s.protocol,
                    from_port=s.from_port,
                    to_port=s.to_port,
                    cidr=s.cidr,
                    group_id=s.group_id,
                    description=s.description,
                )
                for s in specs
            ]
            group.rules.extend(added)
            self._changed()
            return added

    def revoke(
        self,
        group_id: str,
        egress: bool,
        permissions: Sequence[Mapping[str, Any]] = (),
        rule_ids: Sequence[str] = (),
    ) -> list[SgRule]:
        """Revoke ingress or egress rules, named by IpPermissions or by rule IDs; all of them or none."""
        t = self._store.tables
        if bool(permissions) == bool(rule_ids):
            raise Ec2Error(
                "InvalidParameterCombination",
                "Specify either IpPermissions or SecurityGroupRuleIds, not both",
            )
        with self._store.mutation():
            group = t.group(group_id)
            chosen: list[SgRule] = []
            if rule_ids:
                by_id = {r.id: r for r in group.rules if r.egress == egress}
                for rid in rule_ids:
                    if rid not in by_id:
                        raise Ec2Error(
                            "InvalidSecurityGroupRuleId.NotFound",
                            f"The security group rule ID '{rid}' does not exist in {group_id} "
                            f"({'egress' if egress else 'ingress'})",
                        )
                    chosen.append(by_id[rid])
            else:
                by_key = {r.key(): r for r in group.rules}
                for spec in specs_of(permissions, egress):
                    rule = by_key.get(spec.key())
                    if rule is None:
                        raise Ec2Error(
                            "InvalidPermission.NotFound",
                            f"The specified rule does not exist in this security group ({spec.describe()})",
                        )
                    chosen.append(rule)
            gone = {r.id for r in chosen}
            group.rules = [r for r in group.rules if r.id not in gone]
            self._changed()
            return chosen

    def _check_peers(self, group: SecurityGroup, specs: Iterable[RuleSpec]) -> None:
        """Referenced groups exist, in the group's VPC (the lab has no peering)."""
        for spec in specs:
            if spec.group_id:
                peer = self._store.tables.groups.get(spec.group_id)
                if peer is None:
                    raise not_found("sg", spec.group_id)
                if peer.vpc_id != group.vpc_id:
                    raise Ec2Error(
                        "InvalidGroup.NotFound",
                        f"The security group '{spec.group_id}' does not exist in VPC '{group.vpc_id}'",
                    )

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
        """The groups, each once, in order; each must exist in `vpc_id`, at most 5 of them."""
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
        if len(result) > GROUPS_PER_ENI:
            raise Ec2Error(
                "SecurityGroupsPerInterfaceLimitExceeded",
                f"The maximum number of security groups per interface has been reached "
                f"({len(result)} given, {GROUPS_PER_ENI} allowed).",
            )
        return result
