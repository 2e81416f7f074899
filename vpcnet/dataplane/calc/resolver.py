"""The endpoint → policy resolver (felix's calc/policy_resolver.go).

It knows the tiers and turns, for each local endpoint, the policies that select it into the ordered
tiers its chains jump through: tiers by (order, None last, name), each tier's policies by (order, None
last, name), with the tier's default action. A policy naming a tier we do not know (yet) is not in
force. The fail-closed tier (vpcnet.policy.failclosed) is built in, like "default", and runs first.
No tier in a direction: nothing selects the endpoint that way, the namespace profile allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vpcnet.dataplane.policy_state import EndpointSpec, TierDefault, TierPolicies
from vpcnet.policy.failclosed import FAIL_CLOSED_TIER_SPEC
from vpcnet.policy.model import DEFAULT_TIER_SPEC, Action, Policy, TierSpec


def order_tiers(policies: Iterable[Policy], tiers: Mapping[str, TierSpec]) -> tuple[TierPolicies, ...]:
    """The policies of one endpoint and direction, grouped by tier, in evaluation order."""
    by_tier: dict[str, list[Policy]] = {}
    for p in policies:
        by_tier.setdefault(p.tier, []).append(p)
    out = []
    for tier in sorted((tiers[t] for t in by_tier if t in tiers), key=lambda t: t.sort_key):
        ordered = sorted(by_tier[tier.name], key=lambda p: p.sort_key)
        default: TierDefault = "pass" if tier.default_action is Action.PASS else "deny"
        out.append(TierPolicies(tier.name, tuple(p.id for p in ordered), default))
    return tuple(out)


class EndpointResolver:
    def __init__(self) -> None:
        self.tiers: dict[str, TierSpec] = {
            DEFAULT_TIER_SPEC.name: DEFAULT_TIER_SPEC,
            FAIL_CLOSED_TIER_SPEC.name: FAIL_CLOSED_TIER_SPEC,
        }
        self.endpoints: dict[str, EndpointSpec] = {}  # by iface: what the data plane gets
        self.iface_of: dict[str, str] = {}  # ref -> iface of the local endpoints
        self.changed = False  # set on every change of `endpoints`; the caller clears it

    def put_tier(self, tier: TierSpec) -> bool:
        """True when the tier changed (every local endpoint must then be resolved again)."""
        if self.tiers.get(tier.name) == tier:
            return False
        self.tiers[tier.name] = tier
        return True

    def remove_tier(self, name: str) -> bool:
        """The default tier cannot go: deleting its resource restores the built-in one."""
        if name == DEFAULT_TIER_SPEC.name:
            return self.put_tier(DEFAULT_TIER_SPEC)
        return self.tiers.pop(name, None) is not None

    def put_endpoint(
        self,
        ref: str,
        iface: str,
        addresses: tuple[str, ...],
        ingress: Iterable[Policy],
        egress: Iterable[Policy],
    ) -> None:
        spec = EndpointSpec(
            iface=iface,
            addresses=addresses,
            ingress=order_tiers(ingress, self.tiers),
            egress=order_tiers(egress, self.tiers),
        )
        old_iface = self.iface_of.get(ref)
        if old_iface is not None and old_iface != iface:
            self.endpoints.pop(old_iface, None)
        self.iface_of[ref] = iface
        if self.endpoints.get(iface) != spec:
            self.endpoints[iface] = spec
            self.changed = True

    def remove_endpoint(self, ref: str) -> None:
        iface = self.iface_of.pop(ref, None)
        if iface is not None:
            self.endpoints.pop(iface, None)
            self.changed = True
