"""projectcalico.org/v3 policy kinds: NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet, GlobalNetworkSet.

Validation follows Calico's: actions Allow/Deny/Log/Pass, protocols by name or number 1-255, ports
(numbers, "first:last" ranges, named ports) only with TCP/UDP/SCTP/UDPLite, icmp only with
ICMP/ICMPv6, selectors parsed by vpcnet.api.selector, global() only in a rule's namespaceSelector.
Types default as Calico does: Ingress when there are no egress rules, Egress when there are only
egress rules, both when there are both. Features vpcnet does not enforce (http, services,
serviceAccounts, serviceAccountSelector) are rejected rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, ResourceKey, register_kind, spec_of
from vpcnet.api.fields import (
    Ctx,
    as_list,
    as_mapping,
    ascii_decimal,
    check_known,
    join,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    parse_cidr,
    port_name_problem,
    quote,
    str_list,
)
from vpcnet.api.selector import Global, Node, Not, SelectorError, parse_selector

API_VERSION = "projectcalico.org/v3"
ACTIONS = ("Allow", "Deny", "Log", "Pass")
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = frozenset((6, 17, 132, 136))
ICMP_PROTOCOLS = frozenset((1, 58))
DEFAULT_TIER = "default"
NAMESPACE_LABEL = "projectcalico.org/namespace"
# ResourceKey.kind of a Calico NetworkPolicy (Kubernetes owns plain "NetworkPolicy").
CALICO_NETWORK_POLICY_KEY_KIND = "NetworkPolicy.projectcalico.org"

PortSpec = int | tuple[int, int] | str  # a port, an inclusive range, or a named port


def protocol_number(value: int | str) -> int:
    """IANA number of a protocol given by Calico name (any case) or number."""
    if isinstance(value, int):
        return value
    for name, number in PROTOCOL_NUMBERS.items():
        if name.lower() == value.lower():
            return number
    raise ValueError(f"unknown protocol {quote(value)}")


def protocol_name(number: int) -> str:
    for name, n in PROTOCOL_NUMBERS.items():
        if n == number:
            return name
    return str(number)


@dataclass(frozen=True)
class IcmpMatch:
    type: int | None = None
    code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type is not None:
            out["type"] = self.type
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass(frozen=True)
class EntityRule:
    """One side (source or destination) of a Calico rule; every given field must match (AND)."""

    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    selector: str | None = None
    not_selector: str | None = None
    namespace_selector: str | None = None
    ports: tuple[PortSpec, ...] = ()
    not_ports: tuple[PortSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (
            ("nets", list(self.nets)),
            ("notNets", list(self.not_nets)),
            ("selector", self.selector),
            ("notSelector", self.not_selector),
            ("namespaceSelector", self.namespace_selector),
            ("ports", [_port_to_yaml(p) for p in self.ports]),
            ("notPorts", [_port_to_yaml(p) for p in self.not_ports]),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class CalicoRule:
    action: str
    protocol: int | None = None
    not_protocol: int | None = None
    ip_version: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: EntityRule = field(default_factory=EntityRule)
    destination: EntityRule = field(default_factory=EntityRule)
    annotations: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        if self.ip_version is not None:
            out["ipVersion"] = self.ip_version
        if self.protocol is not None:
            out["protocol"] = (
                protocol_name(self.protocol)
                if protocol_name(self.protocol) != str(self.protocol)
                else self.protocol
            )
        if self.not_protocol is not None:
            name = protocol_name(self.not_protocol)
            out["notProtocol"] = name if name != str(self.not_protocol) else self.not_protocol
        if self.icmp is not None:
            out["icmp"] = self.icmp.to_dict()
        if self.not_icmp is not None:
            out["notICMP"] = self.not_icmp.to_dict()
        if src := self.source.to_dict():
            out["source"] = src
        if dst := self.destination.to_dict():
            out["destination"] = dst
        if self.annotations:
            out["metadata"] = {"annotations": dict(self.annotations)}
        return out


@dataclass
class _CalicoPolicyBase(Resource):
    metadata: ObjectMeta
    tier: str = DEFAULT_TIER
    order: float | None = None
    selector: str = ""
    types: tuple[str, ...] = ("Ingress",)
    ingress: tuple[CalicoRule, ...] = ()
    egress: tuple[CalicoRule, ...] = ()

    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        "tier",
        "order",
        "selector",
        "types",
        "ingress",
        "egress",
        "performanceHints",
    )
    performance_hints: tuple[str, ...] = ()  # scheduling hints only; no effect on what is allowed

    def _spec_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"tier": self.tier}
        if self.order is not None:
            spec["order"] = int(self.order) if self.order.is_integer() else self.order
        spec["selector"] = self.selector
        spec["types"] = list(self.types)
        if self.ingress:
            spec["ingress"] = [r.to_dict() for r in self.ingress]
        if self.egress:
            spec["egress"] = [r.to_dict() for r in self.egress]
        if self.performance_hints:
            spec["performanceHints"] = list(self.performance_hints)
        return spec

    @classmethod
    def _parse_common(cls, ctx: Ctx, spec: dict[str, Any]) -> dict[str, Any]:
        unsupported = ("serviceAccountSelector",)
        for key in unsupported:
            if spec.get(key):  # empty values, as calicoctl prints them, mean "not used"
                ctx.fault(join("spec", key), "not supported by vpcnet")
        check_known(ctx, {k: v for k, v in spec.items() if k not in unsupported}, "spec", cls.SPEC_FIELDS)
        tier = opt_str(ctx, spec, "tier", "spec") or DEFAULT_TIER
        order = opt_float(ctx, spec, "order", "spec")
        selector = opt_str(ctx, spec, "selector", "spec") or ""
        _check_selector(ctx, selector, "spec.selector", allow_global=False)
        ingress = tuple(
            _rule(ctx, r, join("spec.ingress", i)) for i, r in enumerate(_rules(ctx, spec, "ingress"))
        )
        egress = tuple(
            _rule(ctx, r, join("spec.egress", i)) for i, r in enumerate(_rules(ctx, spec, "egress"))
        )
        types = str_list(ctx, spec, "types", "spec")
        seen: set[str] = set()
        for i, t in enumerate(types):
            if t not in ("Ingress", "Egress"):
                ctx.fault(join("spec.types", i), f"must be Ingress or Egress, got {quote(t)}")
            elif t in seen:
                ctx.fault(join("spec.types", i), f"duplicate value {quote(t)}")
            seen.add(t)
        if not types:
            if egress and ingress:
                types = ["Ingress", "Egress"]
            elif egress:
                types = ["Egress"]
            else:
                types = ["Ingress"]
        # Rules of a direction missing from explicit types are accepted and have no effect, as in
        # Calico (its validator does not cross-check them; Felix only renders the listed directions).
        hints = str_list(ctx, spec, "performanceHints", "spec")
        for i, hint in enumerate(hints):
            if hint != "AssumeNeededOnEveryNode":
                ctx.fault(
                    join("spec.performanceHints", i), f"must be AssumeNeededOnEveryNode, got {quote(hint)}"
                )
        return {
            "tier": tier,
            "order": order,
            "selector": selector,
            "types": tuple(t for t in types if t in ("Ingress", "Egress")),
            "ingress": ingress,
            "egress": egress,
            "performance_hints": tuple(hints),
        }


@register_kind
@dataclass
class CalicoNetworkPolicy(_CalicoPolicyBase):
    """projectcalico.org/v3 NetworkPolicy: applies to endpoints in its own namespace."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "NetworkPolicy"
    NAMESPACED: ClassVar[bool] = True

    @property
    def key(self) -> ResourceKey:
        # Same kind name as Kubernetes' NetworkPolicy, but a different object: both may exist with the
        # same namespace/name, so the key carries the group (kubectl's "networkpolicies.projectcalico.org").
        return ResourceKey(CALICO_NETWORK_POLICY_KEY_KIND, self.metadata.namespace, self.metadata.name)

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        return cls(metadata, **cls._parse_common(ctx, spec_of(ctx, doc)))

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        out["spec"] = self._spec_dict()
        return out


@register_kind
@dataclass
class GlobalNetworkPolicy(_CalicoPolicyBase):
    """projectcalico.org/v3 GlobalNetworkPolicy: cluster wide, optionally limited by namespaceSelector.

    doNotTrack/preDNAT policies act on host endpoints only, so they never select a pod.
    """

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    NAMESPACED: ClassVar[bool] = False
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        *_CalicoPolicyBase.SPEC_FIELDS,
        "namespaceSelector",
        "doNotTrack",
        "preDNAT",
        "applyOnForward",
    )

    namespace_selector: str = ""
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        common = cls._parse_common(ctx, spec)
        ns_sel = opt_str(ctx, spec, "namespaceSelector", "spec") or ""
        _check_selector(ctx, ns_sel, "spec.namespaceSelector", allow_global=False)
        dnt = bool(opt_bool(ctx, spec, "doNotTrack", "spec"))
        pre = bool(opt_bool(ctx, spec, "preDNAT", "spec"))
        aof = bool(opt_bool(ctx, spec, "applyOnForward", "spec"))
        if (dnt or pre) and not aof:
            ctx.fault("spec.applyOnForward", "must be true when doNotTrack or preDNAT is true")
        if dnt and pre:
            ctx.fault("spec.preDNAT", "doNotTrack and preDNAT cannot both be true")
        if pre and common["egress"]:
            ctx.fault("spec.egress", "preDNAT policy cannot have egress rules")
        if pre and "Egress" in common["types"]:
            ctx.fault("spec.types", "preDNAT policy cannot have the Egress type")
        return cls(
            metadata,
            **common,
            namespace_selector=ns_sel,
            do_not_track=dnt,
            pre_dnat=pre,
            apply_on_forward=aof,
        )

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        spec = self._spec_dict()
        if self.namespace_selector:
            spec["namespaceSelector"] = self.namespace_selector
        for key, value in (
            ("doNotTrack", self.do_not_track),
            ("preDNAT", self.pre_dnat),
            ("applyOnForward", self.apply_on_forward),
        ):
            if value:
                spec[key] = True
        out["spec"] = spec
        return out


@register_kind
@dataclass
class Tier(Resource):
    """A policy tier: order (lower first; None = after every ordered tier), defaultAction Deny or Pass."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Tier"
    NAMESPACED: ClassVar[bool] = False

    metadata: ObjectMeta
    order: float | None = None
    default_action: str = "Deny"

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("order", "defaultAction"))
        order = opt_float(ctx, spec, "order", "spec")
        action = opt_str(ctx, spec, "defaultAction", "spec") or "Deny"
        if action not in ("Deny", "Pass"):
            ctx.fault("spec.defaultAction", f"must be Deny or Pass, got {quote(action)}")
        return cls(metadata, order, action)

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        spec: dict[str, Any] = {"defaultAction": self.default_action}
        if self.order is not None:
            spec["order"] = int(self.order) if self.order.is_integer() else self.order
        out["spec"] = spec
        return out


@dataclass
class _NetworkSetBase(Resource):
    metadata: ObjectMeta
    nets: tuple[str, ...] = ()

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("nets", "allowedEgressDomains"))
        if spec.get("allowedEgressDomains"):
            ctx.fault("spec.allowedEgressDomains", "not supported by vpcnet")
        if NAMESPACE_LABEL in metadata.labels:
            # Reserved: it marks an endpoint as namespaced (what global() and namespace scoping test).
            ctx.fault(join("metadata.labels", NAMESPACE_LABEL), "reserved label, not allowed on network sets")
        nets = str_list(ctx, spec, "nets", "spec")
        for i, text in enumerate(nets):
            _check_ip_or_cidr(ctx, text, join("spec.nets", i))
        return cls(metadata, tuple(nets))

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        out["spec"] = {"nets": list(self.nets)}
        return out


@register_kind
@dataclass
class NetworkSet(_NetworkSetBase):
    """Namespaced set of CIDRs that selectors can match by the set's labels."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "NetworkSet"
    NAMESPACED: ClassVar[bool] = True


@register_kind
@dataclass
class GlobalNetworkSet(_NetworkSetBase):
    """Cluster-wide set of CIDRs; matched by selectors (and by global() namespace selectors)."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "GlobalNetworkSet"
    NAMESPACED: ClassVar[bool] = False


# --------------------------------------------------------------------------------------------------


def _check_ip_or_cidr(ctx: Ctx, text: str, path: str) -> None:
    """A CIDR, or a bare address (read as its /32 or /128), as Calico's nets accept."""
    if "/" not in text:
        text += "/128" if ":" in text else "/32"
    parse_cidr(ctx, text, path)


def _check_selector(ctx: Ctx, text: str, path: str, *, allow_global: bool) -> Node | None:
    try:
        root = parse_selector(text).root
    except SelectorError as exc:
        ctx.fault(path, f"invalid selector {quote(text)}: {exc.message} at position {exc.position}")
        return None
    if not allow_global and _contains_global(root):
        ctx.fault(path, "global() may only be used in a rule's namespaceSelector")
    elif _contains_global(root) and not isinstance(root.operand if isinstance(root, Not) else root, Global):
        # Calico rejects global() inside && / || (it means "no namespace", which no other term refines).
        ctx.fault(path, "global() cannot be combined with other selectors")
    return root


def _contains_global(node: Node) -> bool:
    if isinstance(node, Global):
        return True
    children: tuple[Node, ...] = ()
    operand = getattr(node, "operand", None)
    if isinstance(operand, Node):
        children = (operand,)
    operands = getattr(node, "operands", None)
    if isinstance(operands, tuple):
        children = operands
    return any(_contains_global(c) for c in children)


def _rules(ctx: Ctx, spec: dict[str, Any], key: str) -> list[Any]:
    rules = as_list(ctx, spec.get(key), join("spec", key))
    if len(rules) > 1024:
        ctx.fault(join("spec", key), "at most 1024 rules")
    return rules


def _protocol(ctx: Ctx, data: dict[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    p = join(path, key)
    if isinstance(value, bool):
        ctx.fault(p, "must be a protocol name or number")
        return None
    if isinstance(value, int):
        if not 1 <= value <= 255:
            ctx.fault(p, f"protocol number must be 1-255, got {quote(value)}")
            return None
        return value
    if isinstance(value, str):
        if (number := ascii_decimal(value)) is not None:
            return _protocol(ctx, {key: number}, key, path)
        # Calico's validator takes the names exactly as spelled (no "tcp"), as for actions.
        if value in PROTOCOL_NUMBERS:
            return PROTOCOL_NUMBERS[value]
        ctx.fault(p, f"must be one of {', '.join(PROTOCOL_NUMBERS)} or a number 1-255, got {quote(value)}")
        return None
    ctx.fault(p, "must be a protocol name or number")
    return None


def _icmp(ctx: Ctx, data: dict[str, Any], key: str, path: str) -> IcmpMatch | None:
    if data.get(key) is None:
        return None
    p = join(path, key)
    d = as_mapping(ctx, data[key], p)
    check_known(ctx, d, p, ("type", "code"))
    typ = opt_int(ctx, d, "type", p, 0, 254)
    code = opt_int(ctx, d, "code", p, 0, 255)
    if code is not None and typ is None:
        ctx.fault(join(p, "code"), "code may only be given together with type")
    return IcmpMatch(typ, code)


def _ports(ctx: Ctx, data: dict[str, Any], key: str, path: str) -> tuple[PortSpec, ...]:
    out: list[PortSpec] = []
    p = join(path, key)
    items = as_list(ctx, data.get(key), p)
    if len(items) > 50:
        ctx.fault(p, "at most 50 ports")
    for i, item in enumerate(items):
        ip = join(p, i)
        if isinstance(item, bool):
            ctx.fault(ip, "must be a port number, a range 'first:last' or a port name")
        elif isinstance(item, int):
            if not 0 <= item <= 65535:
                ctx.fault(ip, f"port must be 0-65535, got {quote(item)}")
            else:
                out.append(item)
        elif isinstance(item, str):
            if (n := ascii_decimal(item)) is not None:
                if n > 65535:
                    ctx.fault(ip, f"port must be 0-65535, got {quote(item)}")
                else:
                    out.append(n)
            elif ":" in item:
                first, _, last = (ascii_decimal(part) for part in item.partition(":"))
                if first is None or last is None:
                    ctx.fault(ip, f"invalid port range {quote(item)}: expected 'first:last'")
                elif not first <= last <= 65535:
                    ctx.fault(ip, f"invalid port range {quote(item)}: need first <= last <= 65535")
                else:
                    out.append((first, last))
            elif problem := port_name_problem(item):
                ctx.fault(ip, problem)
            else:
                out.append(item)
        else:
            ctx.fault(ip, "must be a port number, a range 'first:last' or a port name")
    return tuple(out)


def _port_to_yaml(port: PortSpec) -> int | str:
    if isinstance(port, tuple):
        return f"{port[0]}:{port[1]}"
    return port


def _entity(ctx: Ctx, raw: Any, path: str) -> EntityRule:
    data = as_mapping(ctx, raw, path)
    unsupported = ("serviceAccounts", "services")
    for key in unsupported:
        if data.get(key):
            ctx.fault(join(path, key), "not supported by vpcnet")
    known = ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts")
    check_known(ctx, {k: v for k, v in data.items() if k not in unsupported}, path, known)
    nets = str_list(ctx, data, "nets", path)
    not_nets = str_list(ctx, data, "notNets", path)
    for key, values in (("nets", nets), ("notNets", not_nets)):
        if len(values) > 256:
            ctx.fault(join(path, key), "at most 256 CIDRs")
        for i, text in enumerate(values):
            _check_ip_or_cidr(ctx, text, join(join(path, key), i))
    # An empty string means "not given" (calicoctl prints them so); stored as None so that the
    # resource reads back equal after to_dict().
    selector = opt_str(ctx, data, "selector", path) or None
    not_selector = opt_str(ctx, data, "notSelector", path) or None
    ns_selector = opt_str(ctx, data, "namespaceSelector", path) or None
    for key, sel_text, allow_global in (
        ("selector", selector, False),
        ("notSelector", not_selector, False),
        ("namespaceSelector", ns_selector, True),
    ):
        if sel_text is not None:
            _check_selector(ctx, sel_text, join(path, key), allow_global=allow_global)
    return EntityRule(
        nets=tuple(nets),
        not_nets=tuple(not_nets),
        selector=selector,
        not_selector=not_selector,
        namespace_selector=ns_selector,
        ports=_ports(ctx, data, "ports", path),
        not_ports=_ports(ctx, data, "notPorts", path),
    )


def _check_ip_versions(
    ctx: Ctx,
    path: str,
    ip_version: int | None,
    protocol: int | None,
    not_protocol: int | None,
    source: EntityRule,
    destination: EntityRule,
) -> None:
    """Calico's rule checks: ICMP is IPv4 and ICMPv6 IPv6, CIDRs match ipVersion, and one rule never
    mixes IPv4 and IPv6 CIDRs (a rule is rendered for one address family)."""
    for proto, version in ((1, 4), (58, 6)):
        if proto in (protocol, not_protocol) and ip_version not in (None, version):
            ctx.fault(join(path, "ipVersion"), f"must be {version} with protocol {protocol_name(proto)}")
    seen: set[int] = set()
    for side_name, side in (("source", source), ("destination", destination)):
        for key, texts in (("nets", side.nets), ("notNets", side.not_nets)):
            versions = {6 if ":" in text else 4 for text in texts}
            field_path = join(join(path, side_name), key)
            if ip_version is not None and versions - {ip_version}:
                ctx.fault(field_path, f"CIDR version does not match the rule's ipVersion {ip_version}")
            if len(versions | seen) > 1:
                ctx.fault(field_path, "a rule may not mix IPv4 and IPv6 CIDRs")
            seen |= versions


def _rule(ctx: Ctx, raw: Any, path: str) -> CalicoRule:
    data = as_mapping(ctx, raw, path)
    unsupported = ("http",)
    if data.get("http"):
        ctx.fault(join(path, "http"), "not supported by vpcnet")
    known = (
        "action",
        "protocol",
        "notProtocol",
        "ipVersion",
        "icmp",
        "notICMP",
        "source",
        "destination",
        "metadata",
    )
    check_known(ctx, {k: v for k, v in data.items() if k not in unsupported}, path, known)
    action_text = opt_str(ctx, data, "action", path)
    action = ""
    if action_text is None:
        ctx.fault(join(path, "action"), "required (Allow, Deny, Log or Pass)")
    else:
        if action_text not in ACTIONS:  # case matters, as in Calico's validator
            ctx.fault(join(path, "action"), f"must be Allow, Deny, Log or Pass, got {quote(action_text)}")
        else:
            action = action_text
    protocol = _protocol(ctx, data, "protocol", path)
    not_protocol = _protocol(ctx, data, "notProtocol", path)
    ip_version = opt_int(ctx, data, "ipVersion", path, 4, 6)
    if ip_version is not None and ip_version not in (4, 6):
        ctx.fault(join(path, "ipVersion"), "must be 4 or 6")
    icmp = _icmp(ctx, data, "icmp", path)
    not_icmp = _icmp(ctx, data, "notICMP", path)
    if (icmp is not None or not_icmp is not None) and protocol not in ICMP_PROTOCOLS:
        ctx.fault(path, "icmp and notICMP need protocol ICMP or ICMPv6")
    source = _entity(ctx, data.get("source"), join(path, "source"))
    destination = _entity(ctx, data.get("destination"), join(path, "destination"))
    for side_name, side in (("source", source), ("destination", destination)):
        if (side.ports or side.not_ports) and protocol not in PORT_PROTOCOLS:
            ctx.fault(join(path, side_name), "ports and notPorts need protocol TCP, UDP, SCTP or UDPLite")
    _check_ip_versions(ctx, path, ip_version, protocol, not_protocol, source, destination)
    meta = as_mapping(ctx, data.get("metadata"), join(path, "metadata"))
    annotations = tuple(
        sorted((str(k), str(v)) for k, v in as_mapping(ctx, meta.get("annotations"), path).items())
    )
    return CalicoRule(
        action=action,
        protocol=protocol,
        not_protocol=not_protocol,
        ip_version=ip_version,
        icmp=icmp,
        not_icmp=not_icmp,
        source=source,
        destination=destination,
        annotations=annotations,
    )
