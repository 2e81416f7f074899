"""Security-group actions: Create/DeleteSecurityGroup, Authorize/RevokeSecurityGroupIngress/Egress,
DescribeSecurityGroups (rules grouped into IpPermissions), DescribeSecurityGroupRules (a row per rule)."""

from __future__ import annotations

from typing import ClassVar

from vpcnet.lab.ec2.actions.answers import tags_out
from vpcnet.lab.ec2.actions.common import Answer, Handler, Params, required
from vpcnet.lab.ec2.engine.sg_rules import flat_permission
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.listing import Fields, by_ids, check_filters, matches, paginate
from vpcnet.lab.ec2.model import SecurityGroup, SgRule
from vpcnet.lab.ec2.state import Cloud


def _has_ports(protocol: str) -> bool:
    return protocol in ("tcp", "udp", "icmp", "icmpv6")


class SecurityGroupActions:
    GROUP_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {"group-id", "group-name", "vpc-id", "description", "owner-id"}
    )
    RULE_FILTERS: ClassVar[frozenset[str]] = frozenset({"group-id", "security-group-rule-id"})

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def handlers(self) -> dict[str, Handler]:
        return {
            "CreateSecurityGroup": self.create_security_group,
            "DeleteSecurityGroup": self.delete_security_group,
            "AuthorizeSecurityGroupIngress": lambda p: self.authorize(p, egress=False),
            "AuthorizeSecurityGroupEgress": lambda p: self.authorize(p, egress=True),
            "RevokeSecurityGroupIngress": lambda p: self.revoke(p, egress=False),
            "RevokeSecurityGroupEgress": lambda p: self.revoke(p, egress=True),
            "DescribeSecurityGroups": self.describe_security_groups,
            "DescribeSecurityGroupRules": self.describe_security_group_rules,
        }

    # ---------------------------------------------------------------- answers

    def _arn(self, kind: str, ident: str) -> str:
        return f"arn:aws:ec2:{self.cloud.region}:{self.cloud.account}:{kind}/{ident}"

    def rule_out(self, group_id: str, r: SgRule) -> Answer:
        out: Answer = {
            "SecurityGroupRuleId": r.id,
            "GroupId": group_id,
            "GroupOwnerId": self.cloud.account,
            "IsEgress": r.egress,
            "IpProtocol": r.protocol,
            "FromPort": r.from_port,
            "ToPort": r.to_port,
            "Description": r.description or None,
            "SecurityGroupRuleArn": self._arn("security-group-rule", r.id),
        }
        if r.cidr:
            out["CidrIpv4"] = r.cidr
        else:
            out["ReferencedGroupInfo"] = {"GroupId": r.group_id, "UserId": self.cloud.account}
        return out

    def _permissions(self, rules: list[SgRule]) -> list[Answer]:
        """Rules with the same protocol and ports share one IpPermission (EC2's grouping), in rule order."""
        grouped: dict[tuple[str, int, int], Answer] = {}
        for r in rules:
            perm = grouped.get((r.protocol, r.from_port, r.to_port))
            if perm is None:
                perm = {
                    "IpProtocol": r.protocol,
                    "IpRanges": [],
                    "Ipv6Ranges": [],
                    "PrefixListIds": [],
                    "UserIdGroupPairs": [],
                }
                if _has_ports(r.protocol):
                    perm.update({"FromPort": r.from_port, "ToPort": r.to_port})
                grouped[(r.protocol, r.from_port, r.to_port)] = perm
            desc = {"Description": r.description} if r.description else {}
            if r.cidr:
                perm["IpRanges"].append({"CidrIp": r.cidr, **desc})
            else:
                perm["UserIdGroupPairs"].append({"GroupId": r.group_id, "UserId": self.cloud.account, **desc})
        return list(grouped.values())

    def group_out(self, g: SecurityGroup) -> Answer:
        return {
            "GroupId": g.id,
            "GroupName": g.name,
            "Description": g.description,
            "OwnerId": self.cloud.account,
            "VpcId": g.vpc_id,
            "IpPermissions": self._permissions([r for r in g.rules if not r.egress]),
            "IpPermissionsEgress": self._permissions([r for r in g.rules if r.egress]),
            "Tags": tags_out(g.tags),
            "SecurityGroupArn": self._arn("security-group", g.id),
        }

    # ---------------------------------------------------------------- actions

    def create_security_group(self, p: Params) -> Answer:
        name = required(p, "GroupName")
        description = required(p, "Description")
        vpc_id = p.get("VpcId")
        if not vpc_id:
            raise Ec2Error("VPCIdNotSpecified", "No default VPC for this user (the lab has none): give VpcId")
        tags: dict[str, str] = {}
        for spec in p.get("TagSpecifications", []):
            rtype = spec.get("ResourceType")
            if rtype != "security-group":
                raise invalid_value(f"'{rtype}' is not a valid taggable resource type for this operation.")
            for t in spec.get("Tags", []):
                tags[required(t, "Key")] = t.get("Value", "")
        group = self.cloud.create_security_group(vpc_id, name, description, tags)
        return {
            "GroupId": group.id,
            "Tags": tags_out(group.tags),
            "SecurityGroupArn": self._arn("security-group", group.id),
        }

    def _group_id(self, p: Params) -> str:
        """GroupId; a GroupName only names groups of a default VPC, which the lab does not have."""
        gid = p.get("GroupId")
        if gid:
            return str(gid)
        if p.get("GroupName"):
            raise Ec2Error(
                "InvalidGroup.NotFound",
                f"The security group '{p['GroupName']}' does not exist in default VPC "
                "(the lab has no default VPC: name the group by GroupId)",
            )
        raise Ec2Error("MissingParameter", "The request must contain the parameter GroupId")

    def delete_security_group(self, p: Params) -> Answer:
        gid = self._group_id(p)
        self.cloud.delete_security_group(gid)
        return {"Return": True, "GroupId": gid}

    def _permissions_in(self, p: Params) -> list[dict[str, object]]:
        perms = p.get("IpPermissions", [])
        flat = flat_permission(p)
        if perms and flat:
            raise Ec2Error(
                "InvalidParameterCombination", "IpPermissions cannot be combined with IpProtocol/CidrIp/ports"
            )
        if p.get("SourceSecurityGroupName"):
            raise invalid_value(
                "SourceSecurityGroupName names default-VPC groups: use UserIdGroupPairs.GroupId"
            )
        return list(perms or flat)

    def authorize(self, p: Params, *, egress: bool) -> Answer:
        gid = self._group_id(p)
        if p.get("TagSpecifications"):
            raise invalid_value("The lab does not tag security group rules (TagSpecifications on Authorize)")
        added = self.cloud.authorize_security_group(gid, self._permissions_in(p), egress=egress)
        return {"Return": True, "SecurityGroupRules": [self.rule_out(gid, r) for r in added]}

    def revoke(self, p: Params, *, egress: bool) -> Answer:
        gid = self._group_id(p)
        removed = self.cloud.revoke_security_group(
            gid,
            egress=egress,
            permissions=self._permissions_in(p),
            rule_ids=p.get("SecurityGroupRuleIds", []),
        )
        return {
            "Return": True,
            "RevokedSecurityGroupRules": [
                {
                    "SecurityGroupRuleId": r.id,
                    "GroupId": gid,
                    "IsEgress": r.egress,
                    "IpProtocol": r.protocol,
                    "FromPort": r.from_port,
                    "ToPort": r.to_port,
                    **({"CidrIpv4": r.cidr} if r.cidr else {"ReferencedGroupId": r.group_id}),
                }
                for r in removed
            ],
        }

    def describe_security_groups(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.GROUP_FILTERS)
        ids = p.get("GroupIds", [])
        names = p.get("GroupNames", [])
        groups = by_ids(self.cloud.security_groups(), lambda g: g.id, ids, "sg")
        if names:
            known = {g.name for g in groups}
            for n in names:
                if n not in known:
                    raise Ec2Error("InvalidGroup.NotFound", f"The security group '{n}' does not exist")
            groups = [g for g in groups if g.name in names]
        selected = []
        for g in groups:
            fields: Fields = {
                "group-id": [g.id],
                "group-name": [g.name],
                "vpc-id": [g.vpc_id],
                "description": [g.description],
                "owner-id": [self.cloud.account],
            }
            if matches(fields, g.tags, filters, self.GROUP_FILTERS):
                selected.append(g)
        page, token = paginate(selected, lambda g: g.seq, p, bool(ids or names), "sg", (5, 1000))
        return {"SecurityGroups": [self.group_out(g) for g in page], "NextToken": token}

    def describe_security_group_rules(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.RULE_FILTERS)
        ids = p.get("SecurityGroupRuleIds", [])
        rows = [(g, r) for g in self.cloud.security_groups() for r in g.rules]
        numbered = list(enumerate(rows, 1))
        known = {r.id for _, r in rows}
        for rid in ids:
            if rid not in known:
                raise Ec2Error(
                    "InvalidSecurityGroupRuleId.NotFound",
                    f"The security group rule ID '{rid}' does not exist",
                )
        selected = []
        for n, (g, r) in numbered:
            if ids and r.id not in ids:
                continue
            fields: Fields = {"group-id": [g.id], "security-group-rule-id": [r.id]}
            if matches(fields, {}, filters, self.RULE_FILTERS):
                selected.append((n, g, r))
        page, token = paginate(selected, lambda row: row[0], p, bool(ids), "sgr", (5, 1000))
        return {"SecurityGroupRules": [self.rule_out(g.id, r) for _, g, r in page], "NextToken": token}
