"""The nft back end changes only what changed, and what it leaves in the kernel is what a full render gives.

One node is programmed change by change through libnftables kept open in the process (dataplane.nft_lib); a
second node gets each state from scratch (table deleted, whole render sent through the nft binary). After
every change both kernels' tables must list the same (handles aside, set elements in any order), and the
transaction sent for the change must touch only the set, chain or endpoint that changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import policy_netkit as netkit
import pytest

from vpcnet.dataplane import names, nft_render
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.nft_apply import NftApplier
from vpcnet.dataplane.nft_lib import NftLib
from vpcnet.dataplane.policy_backend import NftDataplane
from vpcnet.dataplane.policy_state import (
    DesiredState,
    EndpointSpec,
    IpSetSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)

pytestmark = pytest.mark.root

CLIENTS = names.ipset_name("s", "role == 'client'")
ADMINS = names.ipset_name("s", "role == 'admin'")
OUTSIDE = names.ipset_name("n", "10.200.0.0/16,10.201.0.0/16")
HTTP = names.ipset_name("p", "http")
POLICIES = ("np/t/web", "np/t/admin", "np/t/outside")


def policy(pid: str, port: int) -> PolicyChainSpec:
    source = {"np/t/web": CLIENTS, "np/t/admin": ADMINS, "np/t/outside": OUTSIDE}[pid]
    rules = (
        PolicyRule("allow", "tcp", src_sets=(source,), dst_ports=PortMatch((PortRange.single(port),))),
        PolicyRule("allow", "tcp", src_sets=(CLIENTS,), dst_ports=PortMatch(named_sets=(HTTP,))),
    )
    return PolicyChainSpec(pid, "ingress", rules)


def endpoint(i: int) -> EndpointSpec:
    tier = TierPolicies("default", POLICIES[: 1 + i % len(POLICIES)])
    return EndpointSpec(names.host_veth_name("eni", "t", f"p{i}"), (f"10.77.1.{i}/32",), ingress=(tier,))


def hosts(first: int, count: int) -> frozenset[str]:
    return frozenset(f"10.77.2.{i}/32" for i in range(first, first + count))


def state(pods: range, clients: frozenset[str], admins: frozenset[str], web_port: int = 80) -> DesiredState:
    sets = {
        CLIENTS: IpSetSpec(CLIENTS, "hash:net", clients),
        ADMINS: IpSetSpec(ADMINS, "hash:net", admins),
        OUTSIDE: IpSetSpec(OUTSIDE, "hash:net", frozenset({"10.200.0.0/16", "10.201.0.0/16"})),
        HTTP: IpSetSpec(HTTP, "hash:ip,port", frozenset({"10.77.1.1,tcp:8080", "10.77.1.2,tcp:8080"})),
    }
    policies = {(pid, "ingress"): policy(pid, web_port if pid == "np/t/web" else 22) for pid in POLICIES}
    endpoints = {e.iface: e for e in map(endpoint, pods)}
    return DesiredState(("eni",), endpoints, policies, sets)  # type: ignore[arg-type]


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def listing(netns: str) -> dict[str, Any]:
    """Our table as the kernel lists it: rules in order per chain, set and map elements sorted."""
    text = netkit.sh("ip", "netns", "exec", netns, "nft", "-j", "list", "table", "ip", names.NFT_TABLE)
    out: dict[str, Any] = {"chains": {}, "rules": {}, "sets": {}, "maps": {}}
    for item in json.loads(text)["nftables"]:
        (kind, body), *_ = item.items()
        body = _strip(body)
        if kind == "chain":
            out["chains"][body["name"]] = body
        elif kind == "rule":
            out["rules"].setdefault(body["chain"], []).append(body)
        elif kind in ("set", "map"):
            body["elem"] = sorted(body.get("elem", []), key=lambda e: json.dumps(e, sort_keys=True))
            out[kind + "s"][body["name"]] = body
    return out


@pytest.fixture
def nodes() -> Iterator[tuple[netkit.Node, netkit.Node]]:
    with netkit.node() as incremental, netkit.node() as reference:
        yield incremental, reference


def lines_of(applier: NftApplier) -> list[str]:
    return applier.last_input.decode().splitlines()


def test_each_change_rewrites_only_its_part_and_matches_a_full_render(
    nodes: tuple[netkit.Node, netkit.Node],
) -> None:
    incremental, reference = nodes
    lib = NftLib(SubprocessRunner(incremental.netns), incremental.netns)
    try:
        assert lib.loaded, "Debian's libnftables.so.1 is installed with nftables: the library path is tested"
        asyncio.run(_changes(lib, incremental, reference))
    finally:
        lib.close()  # before the namespace goes: its thread lives in it


async def _changes(lib: NftLib, incremental: netkit.Node, reference: netkit.Node) -> None:
    dataplane = NftDataplane(lib)
    full = NftApplier(SubprocessRunner(reference.netns))
    table = f"ip {names.NFT_TABLE}"

    async def step(desired: DesiredState) -> list[str]:
        await dataplane.apply(desired)
        await full.remove_all()
        await full.apply(nft_render.render(desired))
        assert listing(incremental.netns) == listing(reference.netns)
        return lines_of(dataplane.table)

    clients, admins = hosts(1, 20), hosts(100, 5)
    first = await step(state(range(1, 7), clients, admins))
    assert f"add set {table} {CLIENTS} {{ type ipv4_addr; }}" in first  # host addresses: a hash set
    assert f"add set {table} {OUTSIDE} {{ type ipv4_addr; flags interval; }}" in first
    calls = lib.calls

    # A pod joins a selector: one element added, nothing else.
    clients = clients | {"10.77.2.50/32"}
    assert await step(state(range(1, 7), clients, admins)) == [
        f"add element {table} {CLIENTS} {{ 10.77.2.50 }}"
    ]
    # Another leaves one set and joins the other.
    clients, admins = clients - {"10.77.2.3/32"}, admins | {"10.77.2.3/32"}
    assert sorted(await step(state(range(1, 7), clients, admins))) == sorted(
        [
            f"add element {table} {ADMINS} {{ 10.77.2.3 }}",
            f"delete element {table} {CLIENTS} {{ 10.77.2.3 }}",
        ]
    )

    # One policy's rules change: only its chain is flushed and refilled.
    web = names.policy_chain("np/t/web", "ingress")
    sent = await step(state(range(1, 7), clients, admins, web_port=8443))
    assert [line for line in sent if not line.startswith(f"add rule {table} {web} ")] == [
        f"flush chain {table} {web}"
    ]

    # An endpoint goes: its chains and its dispatch entries go; no policy chain or set is touched.
    sent = await step(state(range(1, 6), clients, admins, web_port=8443))
    assert sent and not any("vpcn-pi-" in line or " vpcn4" in line for line in sent), sent

    # A set that held hosts gets a network: it is made again as an interval set (its rules refilled around
    # it), and back; the kernel matches the full render each time.
    admins_net = admins | {"10.96.0.0/12"}
    sent = await step(state(range(1, 6), clients, admins_net, web_port=8443))
    assert f"add set {table} {ADMINS} {{ type ipv4_addr; flags interval; }}" in sent
    sent = await step(state(range(1, 6), clients, admins, web_port=8443))
    assert f"add set {table} {ADMINS} {{ type ipv4_addr; }}" in sent

    # Nothing changed: nothing sent.
    same = state(range(1, 6), clients, admins, web_port=8443)
    await dataplane.apply(same)
    before = lib.calls
    assert (await dataplane.apply(same)).total == 0 and lib.calls == before
    assert lib.calls > calls  # every change went through the library, not the binary

    # After a resync the applier compares against what the kernel lists (a listing: through the binary).
    dataplane.resync()
    assert (await dataplane.apply(state(range(1, 6), clients, admins, web_port=8443))).total == 0
