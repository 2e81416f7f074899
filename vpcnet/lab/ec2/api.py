"""EC2 actions: a parsed request (boto3's member names) in, an answer dict (boto3's member names) out.

The rules live in `state.Cloud`; the handlers, grouped by area in `vpcnet.lab.ec2.actions`, map parameters,
filter, paginate and shape answers. This module is the entry: the endpoint's vocabulary (`ACTIONS`), the
throttling class of an action (`is_mutating`), and `Ec2Api.call`, which dispatches one action."""

from __future__ import annotations

from vpcnet.lab.ec2.actions.addresses import AddressActions
from vpcnet.lab.ec2.actions.answers import Answers
from vpcnet.lab.ec2.actions.common import Answer, Handler, Params
from vpcnet.lab.ec2.actions.enis import EniActions
from vpcnet.lab.ec2.actions.instances import InstanceActions
from vpcnet.lab.ec2.actions.security_groups import SecurityGroupActions
from vpcnet.lab.ec2.actions.tags import TagActions
from vpcnet.lab.ec2.actions.trunking import TrunkingActions
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.state import Cloud

__all__ = ["ACTIONS", "Answer", "Ec2Api", "Params", "is_mutating"]

# The actions this endpoint speaks; Describe* are the "non-mutating" class for throttling.
ACTIONS = (
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeVpcs",
    "DescribeSubnets",
    "DescribeNetworkInterfaces",
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AssignIpv6Addresses",
    "UnassignIpv6Addresses",
    "ModifyNetworkInterfaceAttribute",
    "CreateTags",
    "DeleteTags",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DescribeSecurityGroups",
    "DescribeSecurityGroupRules",
    "AssociateTrunkInterface",
    "DisassociateTrunkInterface",
    "DescribeTrunkInterfaceAssociations",
)


def is_mutating(action: str) -> bool:
    return not action.startswith("Describe")


class Ec2Api:
    """Dispatches EC2 actions to a `Cloud`."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @property
    def cloud(self) -> Cloud:
        return self._cloud

    @cloud.setter
    def cloud(self, cloud: Cloud) -> None:
        """The handler groups are built for one cloud: a new cloud gets new ones."""
        self._cloud = cloud
        answers = Answers(cloud)
        groups = (
            InstanceActions(cloud, answers).handlers(),
            EniActions(cloud, answers).handlers(),
            AddressActions(cloud).handlers(),
            TagActions(cloud).handlers(),
            SecurityGroupActions(cloud).handlers(),
            TrunkingActions(cloud).handlers(),
        )
        handlers: dict[str, Handler] = {}
        for group in groups:
            handlers.update(group)
        # One vocabulary: every action has exactly one handler and every handler is an action.
        if sorted(handlers) != sorted(ACTIONS) or sum(map(len, groups)) != len(ACTIONS):
            raise RuntimeError(f"EC2 handlers {sorted(handlers)} do not match ACTIONS {sorted(ACTIONS)}")
        self._handlers = handlers

    def call(self, action: str, params: Params) -> Answer:
        handler = self._handlers.get(action)
        if handler is None:
            raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
        if params.pop("DryRun", False):
            raise Ec2Error(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", status=412
            )
        return handler(params)
