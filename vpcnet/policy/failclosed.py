"""What stands in for a stored policy that cannot be read: a deny, never a gap.

A policy document that does not decode or validate (written around the API: etcdctl, an older version, a
bad mirror) may have allowed or denied anything, so nothing in it is trusted, not even its selector or its
types. In its place the calculation gets a policy of the same id that denies, in both directions:

* a namespaced policy (Kubernetes or Calico NetworkPolicy): every pod of its namespace;
* a GlobalNetworkPolicy: every pod.

Both directions, because an untrusted document may have declared either (Kubernetes adds Egress as soon
as egress rules exist). The deny sits in a built-in tier that runs before every other tier, so no allow
elsewhere can open what the bad policy might have closed. It is the same whether or not the agent ever
saw a good version (a restarted agent enforces what a running one does); a valid version of the document,
or its deletion, replaces it (same policy id).
"""

from __future__ import annotations

import math

from vpcnet.api.selector import All, Compare, Selector
from vpcnet.policy.model import NAMESPACE_LABEL, Action, Direction, Policy, PolicyKind, Rule, TierSpec

# No stored Tier can take this name (resource names start alphanumeric), and it runs first.
FAIL_CLOSED_TIER_SPEC = TierSpec("_fail-closed", -math.inf, Action.DENY)


def fail_closed_policy(kind: PolicyKind, namespace: str | None, name: str) -> Policy:
    """The deny standing in for the unreadable policy kind namespace/name."""
    root = Compare(NAMESPACE_LABEL, "==", namespace) if namespace else All()
    deny = (Rule(Action.DENY),)
    return Policy(
        kind=kind,
        namespace=namespace,
        name=name,
        tier=FAIL_CLOSED_TIER_SPEC.name,
        order=0.0,
        selector=Selector(root),
        ingress=deny,
        egress=deny,
        types=frozenset({Direction.INGRESS, Direction.EGRESS}),
    )
