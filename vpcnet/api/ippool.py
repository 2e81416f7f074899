"""projectcalico.org/v3 IPPool and IPAMConfiguration: the address pools of the Calico networking mode.

Validation follows Calico's: cidr strictly masked (host bits set is an error), IPv4 or IPv6, not
link-local and not smaller than a block; blockSize 20-32 for IPv4 (default 26), 116-128 for IPv6
(default 122); ipipMode and vxlanMode each Never, Always or CrossSubnet and not both enabled, and no
IP-in-IP for IPv6 (Calico's rule: VXLAN is the IPv6 overlay); nodeSelector a Calico selector (default all()).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, register_kind, spec_of
from vpcnet.api.fields import Ctx, check_known, opt_bool, opt_int, opt_str, quote, reason
from vpcnet.api.selector import SelectorError, parse_selector

API_VERSION = "projectcalico.org/v3"
ENCAP_MODES = ("Never", "Always", "CrossSubnet")
LINK_LOCAL = IPv4Network("169.254.0.0/16")
LINK_LOCAL6 = IPv6Network("fe80::/10")
DEFAULT_BLOCK_SIZE = 26
DEFAULT_BLOCK_SIZE6 = 122
BLOCK_SIZES = {4: (20, 32, DEFAULT_BLOCK_SIZE), 6: (116, 128, DEFAULT_BLOCK_SIZE6)}  # lo, hi, default


@register_kind
@dataclass
class IPPool(Resource):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "IPPool"
    NAMESPACED: ClassVar[bool] = False

    metadata: ObjectMeta
    cidr: IPv4Network | IPv6Network
    block_size: int = DEFAULT_BLOCK_SIZE
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    nat_outgoing: bool = False
    node_selector: str = "all()"
    disabled: bool = False

    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        "cidr",
        "blockSize",
        "ipipMode",
        "vxlanMode",
        "natOutgoing",
        "nodeSelector",
        "disabled",
    )

    @property
    def encapsulation(self) -> str:
        """ "vxlan", "ipip" or "none"."""
        if self.vxlan_mode != "Never":
            return "vxlan"
        if self.ipip_mode != "Never":
            return "ipip"
        return "none"

    @property
    def encap_mode(self) -> str:
        """Never, Always or CrossSubnet, for whichever encapsulation is on."""
        return self.vxlan_mode if self.vxlan_mode != "Never" else self.ipip_mode

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", cls.SPEC_FIELDS)
        cidr = _pool_cidr(ctx, spec.get("cidr"))
        lo, hi, default = BLOCK_SIZES[cidr.version if cidr is not None else 4]
        block_size = opt_int(ctx, spec, "blockSize", "spec", lo, hi)
        if block_size is None:
            block_size = default
        if cidr is not None and cidr.prefixlen > block_size:
            ctx.fault(
                "spec.blockSize", f"the pool /{cidr.prefixlen} is smaller than one block (/{block_size})"
            )
        modes = {}
        for key in ("ipipMode", "vxlanMode"):
            mode = opt_str(ctx, spec, key, "spec") or "Never"
            if mode not in ENCAP_MODES:
                ctx.fault(f"spec.{key}", f"must be one of {', '.join(ENCAP_MODES)}, got {quote(mode)}")
                mode = "Never"
            modes[key] = mode
        if modes["ipipMode"] != "Never" and modes["vxlanMode"] != "Never":
            ctx.fault("spec.vxlanMode", "ipipMode and vxlanMode cannot both be enabled")
        elif modes["ipipMode"] != "Never" and cidr is not None and cidr.version == 6:
            ctx.fault("spec.ipipMode", "IP-in-IP is not supported on an IPv6 pool (use vxlanMode)")
        selector = opt_str(ctx, spec, "nodeSelector", "spec") or "all()"
        try:
            parse_selector(selector)
        except SelectorError as exc:
            ctx.fault(
                "spec.nodeSelector",
                f"invalid selector {quote(selector)}: {exc.message} at position {exc.position}",
            )
        return cls(
            metadata,
            cidr or IPv4Network("0.0.0.0/32"),
            block_size,
            modes["ipipMode"],
            modes["vxlanMode"],
            bool(opt_bool(ctx, spec, "natOutgoing", "spec")),
            selector,
            bool(opt_bool(ctx, spec, "disabled", "spec")),
        )

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        out["spec"] = {
            "cidr": str(self.cidr),
            "blockSize": self.block_size,
            "ipipMode": self.ipip_mode,
            "vxlanMode": self.vxlan_mode,
            "natOutgoing": self.nat_outgoing,
            "nodeSelector": self.node_selector,
            "disabled": self.disabled,
        }
        return out


def _pool_cidr(ctx: Ctx, value: Any) -> IPv4Network | IPv6Network | None:
    if value is None:
        ctx.fault("spec.cidr", "required")
        return None
    if not isinstance(value, str) or "/" not in value:
        ctx.fault("spec.cidr", f"must be a CIDR like 10.244.0.0/16, got {quote(value)}")
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        ctx.fault("spec.cidr", f"invalid CIDR {quote(value)}: {reason(exc)}")
        return None
    if str(network) != value:
        ctx.fault("spec.cidr", f"{quote(value)} has host bits set (did you mean {network}?)")
        return None
    link_local = LINK_LOCAL if network.version == 4 else LINK_LOCAL6
    if network.overlaps(link_local):
        ctx.fault("spec.cidr", f"{value} overlaps the link-local range {link_local}")
        return None
    return network


@register_kind
@dataclass
class IPAMConfiguration(Resource):
    """The cluster's IPAM settings (one object, named "default")."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "IPAMConfiguration"
    NAMESPACED: ClassVar[bool] = False

    metadata: ObjectMeta
    strict_affinity: bool = False
    max_blocks_per_host: int = 0  # 0: no limit

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        check_known(ctx, spec, "spec", ("strictAffinity", "maxBlocksPerHost"))
        if metadata.name and metadata.name != "default":
            ctx.fault(
                "metadata.name",
                f"must be 'default' (there is one IPAMConfiguration), got {quote(metadata.name)}",
            )
        strict = bool(opt_bool(ctx, spec, "strictAffinity", "spec"))
        max_blocks = opt_int(ctx, spec, "maxBlocksPerHost", "spec", 0, 1 << 20) or 0
        if max_blocks and not strict:
            ctx.fault(
                "spec.maxBlocksPerHost", "needs strictAffinity: true (borrowing would bypass the limit)"
            )
        return cls(metadata, strict, max_blocks)

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        out["spec"] = {"strictAffinity": self.strict_affinity, "maxBlocksPerHost": self.max_blocks_per_host}
        return out


def pool_update_faults(applied: list[IPPool], stored: list[IPPool]) -> list[str]:
    """What one pool cannot be given the others (pure): a stored pool keeps its cidr and blockSize (its
    blocks in the datastore were cut to them), and no two pools overlap (their blocks would share
    addresses). `applied` are the pools being applied, `stored` the ones in the datastore now."""
    faults: list[str] = []
    by_name = {pool.name: pool for pool in stored}
    for pool in applied:
        old = by_name.get(pool.name)
        if old is not None and old.cidr != pool.cidr:
            faults.append(
                f"IPPool {pool.name}: spec.cidr: cannot change ({old.cidr} -> {pool.cidr}); make a new pool"
            )
        if old is not None and old.block_size != pool.block_size:
            faults.append(
                f"IPPool {pool.name}: spec.blockSize: cannot change ({old.block_size} -> {pool.block_size}); "
                "make a new pool"
            )
    result = {pool.name: pool for pool in stored}
    result.update({pool.name: pool for pool in applied})
    applied_names = {pool.name for pool in applied}
    ordered = sorted(result.values(), key=lambda p: p.name)

    def rank(p: IPPool) -> int:
        # Blame the pool being added (else the one being applied), not the one already there.
        return (p.name in applied_names) + (p.name not in by_name)

    for i, pool in enumerate(ordered):
        for other in ordered[i + 1 :]:
            if pool.cidr.overlaps(other.cidr) and (pool.name in applied_names or other.name in applied_names):
                first, second = (pool, other) if rank(pool) >= rank(other) else (other, pool)
                what = f"{first.cidr} overlaps IPPool {second.name} ({second.cidr})"
                faults.append(f"IPPool {first.name}: spec.cidr: {what}")
    return faults
