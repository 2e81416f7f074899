"""Which policy component a node runs, by its pods' family.

IPv4 pods, and Calico mode in any family: the policy agent (vpcnet.agent.policy; in Calico mode with IPv6
pods its IPv6 guard fails their IPv6 traffic closed while policies exist: vpcnet.agent.policy_guard6).
VPC mode's IPv6 pods (ENABLE_IPv6): policy for IPv6 is not
enforced yet (issue 15 item 4), and the IPv4 data plane must not see those pods: its fail-closed dispatch
would drop every pod veth it has no IPv4 endpoint for, the IPv4 egress of IPv6 pods included. So the node
programs no policy rules, says so in its log and on /v1/policy, and reports ready.
"""

from __future__ import annotations

import json
import logging

from vpcnet.agent import policy
from vpcnet.agent.component import Component
from vpcnet.agent.config import Mode
from vpcnet.agent.context import AgentContext
from vpcnet.agent.http import Response

log = logging.getLogger("vpcnet.agent.policy")

NOT_ENFORCED = "NetworkPolicy is not enforced for IPv6 pods yet (ENABLE_IPv6=true; issue 15 item 4)"


def make_component(ctx: AgentContext) -> Component:
    if ctx.config.enable_ipv6 and ctx.config.mode is Mode.VPC:
        return PolicyNotEnforced(ctx)
    return policy.make_component(ctx)


class PolicyNotEnforced:
    name = "policy"

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        log.warning("policy: %s; no policy rules are programmed on this node", NOT_ENFORCED)
        self.ctx.introspection.route("/v1/policy", self._introspect)

    async def _introspect(self, query: str) -> Response:
        body = {"enforced": False, "reason": NOT_ENFORCED}
        return 200, "application/json", json.dumps(body, indent=2).encode()

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True
