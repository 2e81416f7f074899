"""networking.k8s.io/v1 NetworkPolicy, and metav1 LabelSelector with apimachinery semantics.

Validation follows the API server (ValidateNetworkPolicy); defaulting too: a port's protocol
defaults to TCP, and policyTypes defaults to [Ingress] plus Egress when egress rules exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, register_kind, spec_of
from vpcnet.api.fields import (
    Ctx,
    IPNetwork,
    as_list,
    as_mapping,
    check_known,
    join,
    label_key_problem,
    label_value_problem,
    labels_map,
    opt_int,
    opt_str,
    parse_cidr,
    port_name_problem,
    quote,
    str_list,
)
from vpcnet.api.selector import Compare, Has, InSet, Node, Not, and_all

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values  # absent key matches
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels

    def to_node(self) -> Node:
        if self.operator == "In":
            return InSet(self.key, tuple(sorted(set(self.values))))
        if self.operator == "NotIn":
            return InSet(self.key, tuple(sorted(set(self.values))), negated=True)
        if self.operator == "Exists":
            return Has(self.key)
        return Not(Has(self.key))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class LabelSelector:
    """matchLabels AND matchExpressions; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @classmethod
    def of(cls, labels: Mapping[str, str] | None = None, *exprs: LabelSelectorRequirement) -> LabelSelector:
        return cls(tuple(sorted((labels or {}).items())), tuple(exprs))

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def to_node(self) -> Node:
        """The same selection in the Calico selector language (matchLabels sorted, as Calico does)."""
        terms: list[Node] = [Compare(k, "==", v) for k, v in self.match_labels]
        terms += [req.to_node() for req in self.match_expressions]
        return and_all(*terms)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [r.to_dict() for r in self.match_expressions]
        return out

    @classmethod
    def parse(cls, ctx: Ctx, value: Any, path: str) -> LabelSelector:
        data = as_mapping(ctx, value, path)
        check_known(ctx, data, path, ("matchLabels", "matchExpressions"))
        labels = labels_map(ctx, data, "matchLabels", path)
        exprs: list[LabelSelectorRequirement] = []
        epath = join(path, "matchExpressions")
        for i, raw in enumerate(as_list(ctx, data.get("matchExpressions"), epath)):
            p = join(epath, i)
            rd = as_mapping(ctx, raw, p)
            check_known(ctx, rd, p, ("key", "operator", "values"))
            key = opt_str(ctx, rd, "key", p)
            if not key:
                ctx.fault(join(p, "key"), "required")
            elif problem := label_key_problem(key):
                ctx.fault(join(p, "key"), problem)
            op = opt_str(ctx, rd, "operator", p)
            if op is None:
                ctx.fault(join(p, "operator"), "required")
            elif op not in OPERATORS:
                ctx.fault(join(p, "operator"), f"must be one of {', '.join(OPERATORS)}, got {quote(op)}")
            values = str_list(ctx, rd, "values", p)
            if op in ("In", "NotIn") and not values:
                ctx.fault(join(p, "values"), f"must be non-empty when operator is {op}")
            if op in ("Exists", "DoesNotExist") and values:
                ctx.fault(join(p, "values"), f"must be empty when operator is {op}")
            for j, v in enumerate(values):
                if problem := label_value_problem(v):
                    ctx.fault(join(join(p, "values"), j), problem)
            if key and op in OPERATORS:
                exprs.append(LabelSelectorRequirement(key, op, tuple(values)))
        return cls(tuple(sorted(labels.items())), tuple(exprs))


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.cidr, strict=False)

    @property
    def except_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.except_)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": self.cidr}
        if self.except_:
            out["except"] = list(self.except_)
        return out


@dataclass(frozen=True)
class NetworkPolicyPeer:
    """podSelector and namespaceSelector are ANDed; ipBlock stands alone. None = not given."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.to_dict()
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.to_dict()
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.to_dict()
        return out


@dataclass(frozen=True)
class NetworkPolicyPort:
    """protocol (defaulted TCP); port None = every port; a str port is a named port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol}
        if self.port is not None:
            out["port"] = self.port
        if self.end_port is not None:
            out["endPort"] = self.end_port
        return out


@dataclass(frozen=True)
class NetworkPolicyRule:
    """An ingress rule (peers = from) or egress rule (peers = to). Empty peers/ports = all."""

    peers: tuple[NetworkPolicyPeer, ...] = ()
    ports: tuple[NetworkPolicyPort, ...] = ()

    def to_dict(self, peer_key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ports:
            out["ports"] = [p.to_dict() for p in self.ports]
        if self.peers:
            out[peer_key] = [p.to_dict() for p in self.peers]
        return out


@register_kind
@dataclass
class K8sNetworkPolicy(Resource):
    """networking.k8s.io/v1 NetworkPolicy (policy_types already defaulted)."""

    API_VERSION: ClassVar[str] = "networking.k8s.io/v1"
    KIND: ClassVar[str] = "NetworkPolicy"
    NAMESPACED: ClassVar[bool] = True
    TOP_LEVEL: ClassVar[tuple[str, ...]] = (
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "status",
    )  # status ignored

    metadata: ObjectMeta
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    ingress: tuple[NetworkPolicyRule, ...] = ()
    egress: tuple[NetworkPolicyRule, ...] = ()
    policy_types: tuple[str, ...] = ("Ingress",)

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("podSelector", "ingress", "egress", "policyTypes"))
        pod_selector = LabelSelector.parse(ctx, spec.get("podSelector"), "spec.podSelector")
        ingress = _rules(ctx, spec, "ingress", "from")
        egress = _rules(ctx, spec, "egress", "to")
        types = str_list(ctx, spec, "policyTypes", "spec")
        # As the API server: at most two entries, each Ingress or Egress (a repeat is accepted).
        if len(types) > len(POLICY_TYPES):
            ctx.fault("spec.policyTypes", f"may not specify more than two policyTypes, got {types}")
        else:
            for i, t in enumerate(types):
                if t not in POLICY_TYPES:
                    ctx.fault(join("spec.policyTypes", i), f"must be Ingress or Egress, got {quote(t)}")
        if not types:
            types = ["Ingress", "Egress"] if egress else ["Ingress"]
        return cls(metadata, pod_selector, ingress, egress, tuple(t for t in types if t in POLICY_TYPES))

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        spec: dict[str, Any] = {"podSelector": self.pod_selector.to_dict()}
        if self.ingress:
            spec["ingress"] = [r.to_dict("from") for r in self.ingress]
        if self.egress:
            spec["egress"] = [r.to_dict("to") for r in self.egress]
        spec["policyTypes"] = list(self.policy_types)
        out["spec"] = spec
        return out


def _rules(ctx: Ctx, spec: dict[str, Any], key: str, peer_key: str) -> tuple[NetworkPolicyRule, ...]:
    rules: list[NetworkPolicyRule] = []
    base = join("spec", key)
    for i, raw in enumerate(as_list(ctx, spec.get(key), base)):
        path = join(base, i)
        data = as_mapping(ctx, raw, path)
        check_known(ctx, data, path, ("ports", peer_key))
        ports = [
            _port(ctx, item, join(join(path, "ports"), j))
            for j, item in enumerate(as_list(ctx, data.get("ports"), join(path, "ports")))
        ]
        peers = [
            _peer(ctx, item, join(join(path, peer_key), j))
            for j, item in enumerate(as_list(ctx, data.get(peer_key), join(path, peer_key)))
        ]
        rules.append(NetworkPolicyRule(tuple(peers), tuple(ports)))
    return tuple(rules)


def _port(ctx: Ctx, raw: Any, path: str) -> NetworkPolicyPort:
    data = as_mapping(ctx, raw, path)
    check_known(ctx, data, path, ("protocol", "port", "endPort"))
    protocol = opt_str(ctx, data, "protocol", path) or "TCP"
    if protocol not in PROTOCOLS:
        ctx.fault(join(path, "protocol"), f"must be one of TCP, UDP, SCTP, got {quote(protocol)}")
    port: int | str | None = None
    raw_port = data.get("port")
    if isinstance(raw_port, str):
        if problem := port_name_problem(raw_port):
            ctx.fault(join(path, "port"), problem)
        port = raw_port
    elif raw_port is not None:
        port = opt_int(ctx, data, "port", path, 1, 65535)
    end_port = opt_int(ctx, data, "endPort", path, 1, 65535)
    if end_port is not None:
        if port is None:
            ctx.fault(join(path, "endPort"), "may not be specified when port is not specified")
        elif isinstance(port, str):
            ctx.fault(join(path, "endPort"), "may not be specified when port is a named port")
        elif end_port < port:
            ctx.fault(join(path, "endPort"), f"must be greater than or equal to port ({port})")
    return NetworkPolicyPort(protocol, port, end_port)


def _peer(ctx: Ctx, raw: Any, path: str) -> NetworkPolicyPeer:
    data = as_mapping(ctx, raw, path)
    check_known(ctx, data, path, ("podSelector", "namespaceSelector", "ipBlock"))
    pod = (
        LabelSelector.parse(ctx, data["podSelector"], join(path, "podSelector"))
        if "podSelector" in data
        else None
    )
    ns = (
        LabelSelector.parse(ctx, data["namespaceSelector"], join(path, "namespaceSelector"))
        if "namespaceSelector" in data
        else None
    )
    block: IPBlock | None = None
    if "ipBlock" in data:
        bpath = join(path, "ipBlock")
        bd = as_mapping(ctx, data["ipBlock"], bpath)
        check_known(ctx, bd, bpath, ("cidr", "except"))
        cidr_text = bd.get("cidr")
        if cidr_text is None:
            ctx.fault(join(bpath, "cidr"), "required")
        net = parse_cidr(ctx, cidr_text, join(bpath, "cidr")) if cidr_text is not None else None
        excepts = str_list(ctx, bd, "except", bpath)
        for j, text in enumerate(excepts):
            epath = join(join(bpath, "except"), j)
            ex = parse_cidr(ctx, text, epath)
            if ex is None or net is None:
                continue
            if ex.version != net.version or not ex.subnet_of(net) or ex == net:  # type: ignore[arg-type]
                ctx.fault(epath, f"must be a strict subset of cidr {cidr_text}")
        block = IPBlock(str(cidr_text), tuple(excepts))
        if pod is not None or ns is not None:
            ctx.fault(
                path, "may not specify more than 1 peer type (ipBlock with podSelector/namespaceSelector)"
            )
    if pod is None and ns is None and block is None:
        ctx.fault(path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
    return NetworkPolicyPeer(pod, ns, block)
