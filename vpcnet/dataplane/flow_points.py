"""The verdict points of the policy layout and the short ids their NFLOG actions carry (pure).

The kernel hands the agent each logged packet with the prefix of the rule that logged it; the prefix says
which verdict point that was, in at most 63 bytes (iptables' NFLOG prefix; nft allows more), after
felix's own prefix encoding. The layout (rule_layout) writes them, the flow log reads them back here:

  D<d><i> <chain>   a policy's rule <i> (its index in spec.ingress/egress) denied; <chain> is the policy's
  A<d><i> <chain>   chain (vpcn-pi-* / vpcn-po-*, at most 28 characters), which names the policy and direction
  T<d> <tier>       the end of a tier dropped (no rule of its policies decided); long tier names are hashed
  N<d>              no policy decided: no policy selects the pod, or every tier passed (allowed)
  S                 the anti-spoofing drop (a pod sent from an address that is not its own)

<d> is "i" (ingress) or "e" (egress). `decider_table(state)` maps every prefix a state's layout can emit to
what decided, in the terms `vpcnet policy explain` uses (tier, policy id, spec rule index, reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from vpcnet.dataplane import names
from vpcnet.dataplane.policy_state import DesiredState, Direction, EndpointSpec

PREFIX_MAX = 63  # iptables' xt_nflog_info holds 64 bytes with the terminating NUL
TIER_TOKEN_MAX = 40
ANTI_SPOOFING = "S"
DIRECTION_LETTER: dict[Direction, str] = {"ingress": "i", "egress": "e"}
_LETTER_DIRECTION: dict[str, Direction] = {"i": "ingress", "e": "egress"}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Reason = Literal["rule", "end-of-tier", "no-policy", "profile", "anti-spoofing"]
Verdict = Literal["allow", "deny"]


def rule_prefix(verdict: Verdict, direction: Direction, rule_index: int, chain: str) -> str:
    return _checked(f"{'A' if verdict == 'allow' else 'D'}{DIRECTION_LETTER[direction]}{rule_index} {chain}")


def end_of_tier_prefix(direction: Direction, tier: str) -> str:
    return _checked(f"T{DIRECTION_LETTER[direction]} {tier_token(tier)}")


def no_policy_prefix(direction: Direction) -> str:
    return f"N{DIRECTION_LETTER[direction]}"


def point_index(spec_index: int | None, position: int) -> int:
    """The rule index a prefix carries: the spec's where known, else the rule's place in its chain."""
    return spec_index if spec_index is not None else position


def tier_token(tier: str) -> str:
    """The tier's name where it is short and plain, else a hash of it (never a truncation)."""
    if len(tier) <= TIER_TOKEN_MAX and _SAFE.match(tier):
        return tier
    return "_" + names.digest(tier, 24)


def _checked(prefix: str) -> str:
    if len(prefix.encode()) > PREFIX_MAX:
        raise ValueError(f"flow log prefix {prefix!r} is longer than {PREFIX_MAX} bytes")
    return prefix


@dataclass(frozen=True)
class Decider:
    """What decided a logged packet, in `policy explain`'s terms."""

    verdict: Verdict
    reason: Reason
    direction: Direction
    tier: str | None = None
    policy: str | None = None  # policy id, e.g. "knp/default/deny-all"
    rule_index: int | None = None  # index in the policy's spec.ingress / spec.egress

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "direction": self.direction,
            "tier": self.tier,
            "policy": self.policy,
            "rule": self.rule_index,
        }


def decider_table(state: DesiredState) -> dict[str, Decider]:
    """Every prefix the layout of state can emit -> what it means (N* read as no-policy; see `resolve`)."""
    table: dict[str, Decider] = {ANTI_SPOOFING: Decider("deny", "anti-spoofing", "egress")}
    tier_of: dict[str, str] = {}
    for endpoint in state.endpoints.values():
        for direction, tiers in (("ingress", endpoint.ingress), ("egress", endpoint.egress)):
            for tier in tiers:
                prefix = end_of_tier_prefix(direction, tier.tier)  # type: ignore[arg-type]
                table[prefix] = Decider("deny", "end-of-tier", direction, tier.tier)  # type: ignore[arg-type]
                for policy_id in tier.policy_ids:
                    tier_of[policy_id] = tier.tier
    for direction in ("ingress", "egress"):
        table[no_policy_prefix(direction)] = Decider("allow", "no-policy", direction)  # type: ignore[arg-type]
    for spec in state.policies.values():
        for position, rule in enumerate(spec.rules):
            if rule.action not in ("allow", "deny"):
                continue
            index = point_index(rule.spec_index, position)
            verdict: Verdict = "allow" if rule.action == "allow" else "deny"
            table[rule_prefix(verdict, spec.direction, index, spec.chain)] = Decider(
                verdict, "rule", spec.direction, tier_of.get(spec.policy_id), spec.policy_id, index
            )
    return table


def resolve(table: dict[str, Decider], prefix: str, endpoint: EndpointSpec | None) -> Decider | None:
    """The decider of prefix for a packet of endpoint (the local pod whose chain logged it); None when the
    prefix is not in the table (a policy deleted since the packet was logged)."""
    decider = table.get(prefix)
    if decider is None or decider.reason != "no-policy" or endpoint is None:
        return decider
    tiers = endpoint.ingress if decider.direction == "ingress" else endpoint.egress
    if tiers:  # policies select the pod, and every tier passed: the namespace profile allows
        return Decider("allow", "profile", decider.direction)
    return decider


def direction_of(prefix: str) -> Direction | None:
    """The direction a prefix's verdict point sits in (S: egress), None for a prefix not of ours."""
    if prefix == ANTI_SPOOFING:
        return "egress"
    if len(prefix) >= 2 and prefix[0] in "DATN":
        return _LETTER_DIRECTION.get(prefix[1])
    return None
