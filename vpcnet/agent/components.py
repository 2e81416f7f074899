"""The registry of the agent's components, started in this order (and stopped in reverse).

Each entry names a factory `make_component(ctx: AgentContext) -> Component` by import path, and the modes
(`VPCNET_MODE`) it runs in; a part registers itself by adding one line here. The first entry for a mode
must set `ctx.allocator` and `ctx.node`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from vpcnet.agent.component import Component
from vpcnet.agent.config import Mode
from vpcnet.agent.context import AgentContext

Factory = Callable[[AgentContext], Component]


@dataclass(frozen=True)
class Entry:
    name: str
    factory: str  # "package.module:function"
    modes: tuple[Mode, ...] = (Mode.VPC, Mode.CALICO)


COMPONENTS: tuple[Entry, ...] = (
    Entry("ipam", "vpcnet.agent.vpc_ipam:make_component", (Mode.VPC,)),
    Entry("ipam", "vpcnet.agent.pool_ipam:make_component", (Mode.CALICO,)),
    # policy before cni: it closes a bare node's pod veths before the first pod can be wired (fail closed).
    Entry("policy", "vpcnet.agent.policy_family:make_component"),
    # after policy: it reads the policy calculation (ctx.policy) to name pods and deciding rules.
    Entry("flows", "vpcnet.agent.flow_logs:make_component"),
    Entry("cni", "vpcnet.agent.cni_component:make_component"),
)


def load_factories(mode: Mode, entries: tuple[Entry, ...] = COMPONENTS) -> list[tuple[str, Factory]]:
    out: list[tuple[str, Factory]] = []
    for entry in entries:
        if mode not in entry.modes:
            continue
        module_name, _, attr = entry.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        out.append((entry.name, factory))
    return out
