"""vpcresources.k8s.aws/v1beta1 SecurityGroupPolicy (security groups for pods), as the VPC resource controller
defines it: in a namespace, a pod selector and/or a service-account selector, and the security groups a
selected pod's branch ENI gets.

Which pods a policy selects (the resource controller's rule): pods of the policy's namespace for which every
selector the policy gives matches (the pod's labels, its service account's labels). A pod selected by several
policies gets the union of their groups, in a stable order. A policy with neither selector selects nothing
(the CRD asks for one); one without groups is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, register_kind, spec_of
from vpcnet.api.fields import Ctx, as_mapping, check_known, join, quote, str_list
from vpcnet.api.networking import LabelSelector

POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"  # the controller writes it, the CNI reads it
SGP_API_VERSION = "vpcresources.k8s.aws/v1beta1"
SGP_KIND = "SecurityGroupPolicy"
GROUP_ID = re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$")


@register_kind
@dataclass
class SecurityGroupPolicy(Resource):
    API_VERSION: ClassVar[str] = SGP_API_VERSION
    KIND: ClassVar[str] = SGP_KIND
    NAMESPACED: ClassVar[bool] = True
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("apiVersion", "kind", "metadata", "spec", "status")

    metadata: ObjectMeta
    pod_selector: LabelSelector | None = None
    service_account_selector: LabelSelector | None = None
    group_ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("podSelector", "serviceAccountSelector", "securityGroups"))
        pods = (
            LabelSelector.parse(ctx, spec["podSelector"], "spec.podSelector")
            if spec.get("podSelector") is not None
            else None
        )
        accounts = (
            LabelSelector.parse(ctx, spec["serviceAccountSelector"], "spec.serviceAccountSelector")
            if spec.get("serviceAccountSelector") is not None
            else None
        )
        if pods is None and accounts is None:
            ctx.fault("spec", "needs podSelector or serviceAccountSelector")
        groups_doc = as_mapping(ctx, spec.get("securityGroups"), "spec.securityGroups")
        check_known(ctx, groups_doc, "spec.securityGroups", ("groupIds",))
        groups = str_list(ctx, groups_doc, "groupIds", "spec.securityGroups")
        if not groups:
            ctx.fault("spec.securityGroups.groupIds", "required: at least one security group id")
        for i, group in enumerate(groups):
            if not GROUP_ID.match(group):
                ctx.fault(join("spec.securityGroups.groupIds", i), f"not a security group id: {quote(group)}")
        return cls(metadata, pods, accounts, tuple(groups))

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        spec: dict[str, Any] = {"securityGroups": {"groupIds": list(self.group_ids)}}
        if self.pod_selector is not None:
            spec["podSelector"] = self.pod_selector.to_dict()
        if self.service_account_selector is not None:
            spec["serviceAccountSelector"] = self.service_account_selector.to_dict()
        out["spec"] = spec
        return out

    def selects(
        self, namespace: str, pod_labels: Mapping[str, str], account_labels: Mapping[str, str]
    ) -> bool:
        """Whether this policy selects a pod of `namespace` with these labels (and its account's labels)."""
        if namespace != (self.metadata.namespace or "default"):
            return False
        if self.pod_selector is None and self.service_account_selector is None:
            return False
        if self.pod_selector is not None and not self.pod_selector.matches(pod_labels):
            return False
        return self.service_account_selector is None or self.service_account_selector.matches(account_labels)


def stored_policy(body: Mapping[str, Any], where: str) -> SecurityGroupPolicy:
    """A policy as the API stores it (server-set metadata and status dropped); ValidationError if bad."""
    from vpcnet.api.loader import parse_resource

    doc = {k: v for k, v in body.items() if k != "status"}
    doc["metadata"] = {
        k: v for k, v in dict(body.get("metadata") or {}).items() if k in ("name", "namespace")
    }
    policy = parse_resource(doc, where)
    if not isinstance(policy, SecurityGroupPolicy):
        raise ValueError(f"{where}: not a SecurityGroupPolicy")
    return policy


def pod_security_groups(
    policies: Iterable[SecurityGroupPolicy],
    namespace: str,
    pod_labels: Mapping[str, str],
    account_labels: Mapping[str, str],
) -> tuple[str, ...]:
    """The groups of every policy that selects the pod, each once, in policy-name then listed order;
    empty: the pod is not selected (it uses the node's ENIs, as any pod)."""
    out: list[str] = []
    for policy in sorted(policies, key=lambda p: (p.metadata.namespace or "", p.name)):
        if policy.selects(namespace, pod_labels, account_labels):
            out += [g for g in policy.group_ids if g not in out]
    return tuple(out)


@dataclass(frozen=True)
class PodEni:
    """A pod's branch ENI as the `vpc.amazonaws.com/pod-eni` annotation says it (the VPC resource
    controller's format: a JSON list with one object per branch, eniId, ifAddress (its MAC), privateIp,
    vlanId, subnetCidr)."""

    eni_id: str
    mac: str
    address: IPv4Address
    vlan_id: int
    subnet_cidr: IPv4Network

    def annotation(self) -> str:
        entry = {
            "eniId": self.eni_id,
            "ifAddress": self.mac,
            "privateIp": str(self.address),
            "vlanId": self.vlan_id,
            "subnetCidr": str(self.subnet_cidr),
        }
        return json.dumps([entry], separators=(",", ":"))

    @classmethod
    def parse(cls, raw: str) -> PodEni:
        """The first branch of an annotation; ValueError naming the member that is wrong."""
        where = POD_ENI_ANNOTATION
        try:
            entries = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise ValueError(f"{where}: expected a list of branch objects, got {quote(raw)}")
        entry = entries[0]
        try:
            vlan = entry["vlanId"]
            if not isinstance(vlan, int) or not 1 <= vlan <= 4094:
                raise ValueError(f"vlanId {vlan!r} is not a VLAN id (1-4094)")
            return cls(
                eni_id=str(entry["eniId"]),
                mac=str(entry["ifAddress"]).lower(),
                address=IPv4Address(entry["privateIp"]),
                vlan_id=vlan,
                subnet_cidr=IPv4Network(entry["subnetCidr"]),
            )
        except KeyError as exc:
            raise ValueError(f"{where}[0]: {exc.args[0]} is missing") from None
        except ValueError as exc:
            raise ValueError(f"{where}[0]: {exc}") from None
