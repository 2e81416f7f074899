"""crd.k8s.amazonaws.com/v1alpha1 ENIConfig: the subnet and security groups of a node's secondary ENIs under
the VPC CNI's custom networking, and the rule that picks a node's ENIConfig.

Validation: spec.subnet is required and is a subnet id (`subnet-` and hex); spec.securityGroups, when
given, are security group ids (`sg-` and hex), at most 5 (EC2's limit per network interface), no
duplicates. The VPC CNI checks neither and learns of a typo from a failed CreateNetworkInterface; here a
typo is refused when the object is read, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, register_kind, spec_of
from vpcnet.api.fields import Ctx, check_known, join, opt_str, quote, str_list

API_VERSION = "crd.k8s.amazonaws.com/v1alpha1"
MAX_SECURITY_GROUPS = 5  # EC2: security groups per network interface (the default quota)
_SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")
_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")

# How a node names its ENIConfig, as the VPC CNI reads it (pkg/eniconfig): this label first (set by
# something outside the CNI, which is then the source of truth), then the annotation, then the label.
EXTERNAL_LABEL = "vpc.amazonaws.com/externalEniConfig"
DEFAULT_ANNOTATION = "k8s.amazonaws.com/eniConfig"  # ENI_CONFIG_ANNOTATION_DEF overrides
DEFAULT_LABEL = "k8s.amazonaws.com/eniConfig"  # ENI_CONFIG_LABEL_DEF overrides
DEFAULT_NAME = "default"


@register_kind
@dataclass
class ENIConfig(Resource):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "ENIConfig"
    NAMESPACED: ClassVar[bool] = False

    metadata: ObjectMeta
    subnet: str
    security_groups: tuple[str, ...] = ()

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("subnet", "securityGroups"))
        subnet = opt_str(ctx, spec, "subnet", "spec")
        if not subnet:
            ctx.fault("spec.subnet", "required: the subnet the node's secondary ENIs are created in")
            subnet = ""
        elif not _SUBNET_ID.fullmatch(subnet):
            ctx.fault("spec.subnet", f"must be a subnet id (subnet-0123abcd...), got {quote(subnet)}")
        groups = str_list(ctx, spec, "securityGroups", "spec")
        path = join("spec", "securityGroups")
        for i, group in enumerate(groups):
            if not _GROUP_ID.fullmatch(group):
                ctx.fault(join(path, i), f"must be a security group id (sg-0123abcd...), got {quote(group)}")
            elif group in groups[:i]:
                ctx.fault(join(path, i), f"{group} is listed twice")
        if len(groups) > MAX_SECURITY_GROUPS:
            ctx.fault(path, f"at most {MAX_SECURITY_GROUPS} security groups per ENI, got {len(groups)}")
        return cls(metadata, subnet, tuple(groups))

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        out["spec"] = {"subnet": self.subnet, "securityGroups": list(self.security_groups)}
        return out


@dataclass(frozen=True)
class EniConfigKeys:
    """The node annotation and label that name its ENIConfig (ENI_CONFIG_ANNOTATION_DEF / _LABEL_DEF)."""

    annotation: str = DEFAULT_ANNOTATION
    label: str = DEFAULT_LABEL


def node_eniconfig_name(
    labels: Mapping[str, str], annotations: Mapping[str, str], keys: EniConfigKeys
) -> tuple[str, str]:
    """The ENIConfig a node asks for and why: (name, "label <key>" | "annotation <key>" | "no label")."""
    if EXTERNAL_LABEL in labels:
        return labels[EXTERNAL_LABEL], f"label {EXTERNAL_LABEL}"
    if keys.annotation in annotations:
        return annotations[keys.annotation], f"annotation {keys.annotation}"
    if keys.label in labels:
        return labels[keys.label], f"label {keys.label}"
    return DEFAULT_NAME, f"no {EXTERNAL_LABEL}, annotation {keys.annotation} or label {keys.label}"
