"""What components share: the configuration, the node, the allocator, metrics and introspection routes.

Everything one component offers another is a typed field here (no string-keyed bag), so a reader sees who
provides what, and mypy checks the users.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from vpcnet.agent.config import AgentConfig
from vpcnet.agent.http import HttpServer
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.types import Allocator

if TYPE_CHECKING:
    from vpcnet.agent.policy import PolicyAgent
    from vpcnet.cni.service import CniService
    from vpcnet.ipam.interfaces import PodExistence


class NotStarted(RuntimeError):
    pass


@dataclass
class AgentContext:
    config: AgentConfig
    # Prometheus registry served on :61678/metrics; components register their collectors here.
    metrics: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    # Introspection server (127.0.0.1:61679); components add read-only JSON routes with .route(path, handler).
    introspection: HttpServer = field(default_factory=lambda: HttpServer("introspection"))
    # Set once the agent is asked to stop (SIGTERM); long loops may watch it.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The CNI server (set by the cni component when it is made).
    cni: CniService | None = None
    # How the VPC ipam component learns whether a checkpointed pod still exists; None: by its host veth.
    pod_existence: PodExistence | None = None
    # The policy loop (set by the policy component's start(); None in a mode or test without it).
    policy: PolicyAgent | None = None
    _allocator: Allocator | None = None
    _node: NodeInfo | None = None

    @property
    def allocator(self) -> Allocator:
        """The address manager (set by the ipam component's start(), which runs before every other start)."""
        if self._allocator is None:
            raise NotStarted("the ipam component has not started: no allocator yet")
        return self._allocator

    @allocator.setter
    def allocator(self, value: Allocator) -> None:
        self._allocator = value

    @property
    def node(self) -> NodeInfo:
        """The instance this agent runs on (set by the ipam component's start())."""
        if self._node is None:
            raise NotStarted("the ipam component has not started: node unknown")
        return self._node

    @node.setter
    def node(self, value: NodeInfo) -> None:
        self._node = value
