"""The nft applier's bookkeeping: after each apply its view of the kernel is what a full re-read would assume,
though only what changed was looked at; a set whose declaration changes (hash <-> interval) is made again
around the rules that use it; libnftables is given exactly the commands the binary would run."""

from __future__ import annotations

import dataclasses

import pytest
from test_policy_render_family import small_state

from vpcnet.dataplane import nft_render
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.nft_apply import advanced_view, assumed_view, plan
from vpcnet.dataplane.nft_lib import NftLib
from vpcnet.dataplane.policy_state import DesiredState, IpSetSpec

V4 = IpFamily.V4


def hash_net_set(state: DesiredState) -> str:
    return next(n for n, s in sorted(state.ipsets.items()) if s.kind == "hash:net")


def with_members(state: DesiredState, name: str, members: frozenset[str]) -> DesiredState:
    return dataclasses.replace(state, ipsets={**state.ipsets, name: IpSetSpec(name, "hash:net", members)})


def test_a_set_of_hosts_is_a_hash_set_and_one_with_a_network_an_interval_set() -> None:
    hosts = nft_render.NftSet("s", "hash:net", frozenset({"10.0.0.1/32", "10.0.0.2/32"}))
    assert hosts.declaration == "type ipv4_addr;" and hosts.element("10.0.0.1/32") == "10.0.0.1"
    nets = nft_render.NftSet("s", "hash:net", frozenset({"10.0.0.1/32", "10.1.0.0/16"}))
    assert nets.declaration == "type ipv4_addr; flags interval;"
    assert nets.element("10.0.0.1/32") == "10.0.0.1/32"
    v6 = nft_render.NftSet("s", "hash:net", frozenset({"fd00::1/128"}), IpFamily.V6)
    assert v6.declaration == "type ipv6_addr;" and v6.element("fd00::1/128") == "fd00::1"


def test_the_view_after_changes_equals_the_view_of_a_full_render() -> None:
    state = small_state(V4)
    name = hash_net_set(state)
    known = nft_render.render(state)
    view = assumed_view(known)
    states = [
        with_members(state, name, frozenset({"10.0.9.9/32"})),
        with_members(state, name, frozenset({"10.0.9.9/32", "10.8.0.0/16"})),
        dataclasses.replace(state, endpoints={}),
        state,
    ]
    for step in states:
        desired = nft_render.render(step)
        view = advanced_view(view, known, desired)
        known = desired
        assert view == assumed_view(desired)


def test_a_set_turning_into_an_interval_set_is_made_again_between_its_chains_flush_and_refill() -> None:
    state = small_state(V4)
    name = hash_net_set(state)
    before = nft_render.render(with_members(state, name, frozenset({"10.0.9.9/32"})))
    after = nft_render.render(with_members(state, name, frozenset({"10.0.9.9/32", "10.8.0.0/16"})))
    lines = plan(after, assumed_view(before), before)
    users = [c for c, rules in after.chains.items() if any(f"@{name} " in r for r in rules)]
    assert users
    delete = lines.index(f"delete set ip vpcnet {name}")
    assert lines[delete + 1] == f"add set ip vpcnet {name} {{ type ipv4_addr; flags interval; }}"
    assert lines[delete + 2] == f"add element ip vpcnet {name} {{ 10.0.9.9/32, 10.8.0.0/16 }}"
    for chain in users:
        assert lines.index(f"flush chain ip vpcnet {chain}") < delete
        refill = [i for i, line in enumerate(lines) if line.startswith(f"add rule ip vpcnet {chain} ")]
        assert min(refill) > delete
    # Nothing else is rewritten: every flushed chain uses the set.
    assert sorted(line.split()[-1] for line in lines if line.startswith("flush chain")) == sorted(users)


@pytest.mark.parametrize(
    ("argv", "stdin", "expected"),
    [
        (["nft", "-f", "-"], b"add table ip t\n", (b"add table ip t\n", False)),
        (["nft", "-j", "list", "table", "ip", "vpcnet"], None, (b"list table ip vpcnet", True)),
        (["nft", "delete", "table", "ip6", "vpcnet"], None, (b"delete table ip6 vpcnet", False)),
        (["nft", "-a", "list", "ruleset"], None, None),  # an option it does not translate: the binary
        (["iptables-restore"], b"", None),
    ],
)
def test_libnftables_runs_what_the_binary_would(
    argv: list[str], stdin: bytes | None, expected: tuple[bytes, bool] | None
) -> None:
    assert NftLib._command(argv, stdin) == expected
