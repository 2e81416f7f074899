"""A node's policy planes: one per family its pods use (IPv6 pods: their IPv6 plane and the IPv4 plane of
their egress-only address), fed the same events and applied in one loop; the enforced revision is reported
only once every plane has programmed it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from test_policy_agent_loop import MemoryStore, ScriptedDataplane

from vpcnet.agent.config import AgentConfig
from vpcnet.agent.context import AgentContext
from vpcnet.agent.policy import Plane, PolicyAgent, PolicyComponent, PolicyPlane
from vpcnet.agent.policy_family import planes_for
from vpcnet.api.core import Pod
from vpcnet.api.loader import load_documents
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.ipam.ipv6 import Ipv6Allocator


class FamilyDataplane(ScriptedDataplane):
    def __init__(self, family: IpFamily, failures: int = 0) -> None:
        super().__init__(failures)
        self.family = family


def ipv6_pod(name: str, ip: str) -> Pod:
    doc = (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec: {nodeName: n1, containers: [{name: c, image: x}]}\n"
        f"status: {{podIP: '{ip}', podIPs: [{{ip: '{ip}'}}]}}\n"
    )
    (pod,) = load_documents(doc)
    assert isinstance(pod, Pod)
    return pod


def test_ipv4_pods_get_one_plane_and_ipv6_pods_two(tmp_path: Path) -> None:
    (only,) = planes_for(AgentContext(AgentConfig(agent_socket=tmp_path / "s")))
    assert only == Plane(IpFamily.V4)
    ctx = AgentContext(AgentConfig(agent_socket=tmp_path / "s", enable_ipv4=False, enable_ipv6=True))
    six, four = planes_for(ctx)
    assert six == Plane(IpFamily.V6) and four.family is IpFamily.V4 and four.local_addresses is not None
    # the IPv4 plane's endpoint address: the allocator's egress IPv4 of the pod's IPv6 address
    allocator = mock.create_autospec(Ipv6Allocator, instance=True)
    allocator.egress_v4_of.side_effect = lambda ip: (
        IPv4Address("169.254.172.4") if ip == IPv6Address("2001:db8::4") else None
    )
    ctx.allocator = allocator
    assert four.local_addresses(ipv6_pod("a", "2001:db8::4")) == ("169.254.172.4",)
    assert four.local_addresses(ipv6_pod("b", "2001:db8::5")) == ()


def test_one_plane_per_family_at_most(tmp_path: Path) -> None:
    ctx = AgentContext(AgentConfig(agent_socket=tmp_path / "s"))
    with pytest.raises(ValueError, match="at most one per family"):
        PolicyComponent(ctx, (Plane(IpFamily.V4), Plane(IpFamily.V4)))
    with pytest.raises(ValueError, match="one or more"):
        PolicyComponent(ctx, ())


def run_agent(tmp_path: Path, second_failures: int) -> tuple[Any, FamilyDataplane, FamilyDataplane, Path]:
    async def main() -> tuple[Any, FamilyDataplane, FamilyDataplane, Path]:
        store = MemoryStore()
        store.pods = {"a": "2001:db8::4"}
        six, four = FamilyDataplane(IpFamily.V6), FamilyDataplane(IpFamily.V4, second_failures)
        status = tmp_path / "policy-status.json"
        egress = PolicyCalculator(
            "n1", ["eni"], family=IpFamily.V4, local_addresses=lambda p: ("169.254.172.4",)
        )
        agent = PolicyAgent(
            store,
            PolicyCalculator("n1", ["eni"], family=IpFamily.V6),
            six,  # type: ignore[arg-type]
            status_path=status,
            max_backoff=0.05,
            extra_planes=[PolicyPlane(egress, four)],  # type: ignore[arg-type]
        )
        task = asyncio.create_task(agent.run())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if agent.synced.is_set() or four.attempts > 3:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return agent, six, four, status

    return asyncio.run(main())


def test_both_planes_are_fed_and_applied(tmp_path: Path) -> None:
    agent, six, four, status = run_agent(tmp_path, second_failures=0)
    assert agent.synced.is_set()
    (endpoint6,) = six.applied[-1].endpoints.values()
    (endpoint4,) = four.applied[-1].endpoints.values()
    assert six.applied[-1].family is IpFamily.V6 and four.applied[-1].family is IpFamily.V4
    assert endpoint6.addresses == ("2001:db8::4/128",) and endpoint4.addresses == ("169.254.172.4/32",)
    assert endpoint6.iface == endpoint4.iface  # one veth, two families
    reported = json.loads(status.read_text())
    assert reported["planes"] == [{"family": "IPv6", "endpoints": 1}, {"family": "IPv4", "endpoints": 1}]


def test_a_failing_plane_keeps_the_revision_unreported(tmp_path: Path) -> None:
    agent, six, four, status = run_agent(tmp_path, second_failures=10**6)
    assert not agent.synced.is_set() and four.attempts > 3 and not status.exists()
    assert six.applied  # the IPv6 plane took its state; the IPv4 one failing holds the revision back
    assert agent.programming_problem() is not None and "injected" in agent.status()["last_error"]
