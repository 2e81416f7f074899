"""A change that moves only set members (a pod comes or goes on another node) skips the rules' render and
restore: only the sets are written. Anything that touches the rules, or a resync, renders again."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_policy_render_family import Runner, small_state

from vpcnet.dataplane import nft_render
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_backend import make_dataplane, same_rules
from vpcnet.dataplane.policy_state import DesiredState, IpSetSpec


def with_member(state: DesiredState, member: str) -> DesiredState:
    name, spec = next((n, s) for n, s in state.ipsets.items() if s.kind == "hash:net")
    sets = {**state.ipsets, name: IpSetSpec(name, spec.kind, spec.members | {member})}
    return dataclasses.replace(state, ipsets=sets)


def tools(runner: Runner) -> list[str]:
    return [" ".join(argv[:2]) for argv, _ in runner.calls]


def test_same_rules_looks_at_everything_but_set_members() -> None:
    state = small_state(IpFamily.V4)
    assert same_rules(state, with_member(state, "10.0.9.9/32"))
    assert not same_rules(None, state)
    assert not same_rules(state, dataclasses.replace(state, endpoints={}))
    assert not same_rules(state, dataclasses.replace(state, policies={}))
    assert not same_rules(state, dataclasses.replace(state, interface_prefixes=("cali",)))


def test_iptables_writes_only_the_sets() -> None:
    runner = Runner()
    dp = make_dataplane("iptables", runner)
    state = small_state(IpFamily.V4)
    asyncio.run(dp.apply(state))
    assert any(call.startswith("iptables-restore") for call in tools(runner))
    runner.calls.clear()
    asyncio.run(dp.apply(with_member(state, "10.0.9.9/32")))
    assert tools(runner) and not any(call.startswith("iptables") for call in tools(runner)), tools(runner)
    assert any(b"10.0.9.9" in (data or b"") for _, data in runner.calls)
    dp.resync()  # distrust: the next apply compares the rules with the kernel again
    runner.calls.clear()
    asyncio.run(dp.apply(with_member(state, "10.0.9.8/32")))
    assert any(call.startswith("iptables") for call in tools(runner))


def test_nft_sends_the_new_member_with_the_rules_unrendered(monkeypatch: pytest.MonkeyPatch) -> None:
    member = "10.0.9.9/32"
    runner = Runner()
    dp = make_dataplane("nftables", runner)
    state = small_state(IpFamily.V4)
    asyncio.run(dp.apply(state))
    renders: list[DesiredState] = []
    real = nft_render.render
    monkeypatch.setattr(nft_render, "render", lambda s: renders.append(s) or real(s))
    runner.calls.clear()
    asyncio.run(dp.apply(with_member(state, member)))
    assert renders == []
    sent = b"".join(data or b"" for _, data in runner.calls)
    assert member.split("/")[0].encode() in sent
    asyncio.run(dp.apply(dataclasses.replace(state, endpoints={})))
    assert len(renders) == 1
