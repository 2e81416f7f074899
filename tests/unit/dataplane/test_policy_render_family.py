"""The rule layout printed in both dialects and both address families: IPv6 is the same layout, spelled
for ip6tables / ipset inet6 / an nft ip6 table (the IPv4 text is pinned by the golden tests)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence

import pytest

from vpcnet.dataplane import ipset_render, iptables_render, names, nft_render, rule_layout
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.ipset_apply import IpsetApplier
from vpcnet.dataplane.iptables_apply import IptablesApplier
from vpcnet.dataplane.kernel_cmd import CommandResult
from vpcnet.dataplane.nft_apply import NftApplier, parse_json
from vpcnet.dataplane.policy_backend import make_dataplane
from vpcnet.dataplane.policy_state import (
    MARK_ACCEPT,
    MARK_SCRATCH,
    DesiredState,
    EndpointSpec,
    IpSetSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)
from vpcnet.dataplane.rule_layout import AddrSet, Icmp, NamedPorts, Ports, Protocol

V6 = IpFamily.V6
CLIENTS6 = names.ipset_name("s", "role == 'client'", V6)
HTTP6 = names.ipset_name("p", "*,6,http", V6)


def small_state(family: IpFamily) -> DesiredState:
    """One policy (allow TCP 80 and the http named port from clients; ICMP echo logged) on one pod."""
    v4 = family is IpFamily.V4
    pod, client = ("10.0.1.5", "10.0.2.1") if v4 else ("fd00:1::5", "fd00:2::1")
    host = family.host_prefixlen
    clients = names.ipset_name("s", "role == 'client'", family)
    http = names.ipset_name("p", "*,6,http", family)
    echo = 8 if v4 else 128
    policy = PolicyChainSpec(
        "knp/default/web",
        "ingress",
        (
            PolicyRule(
                "allow", "tcp", src_sets=(clients,), dst_ports=PortMatch((PortRange(80, 80),), (http,))
            ),
            PolicyRule("log", "icmp", icmp_type=echo, icmp_code=0),
            PolicyRule("deny", "icmp", not_icmp_type=echo),
        ),
    )
    endpoint = EndpointSpec(
        "eni82111e10a96",
        (f"{pod}/{host}",),
        ingress=(TierPolicies("default", ("knp/default/web",)),),
    )
    sets = {
        clients: IpSetSpec(clients, "hash:net", frozenset({f"{client}/{host}"})),
        http: IpSetSpec(http, "hash:ip,port", frozenset({f"{pod},tcp:8080"})),
    }
    return DesiredState(
        ("eni",), {endpoint.iface: endpoint}, {(policy.policy_id, "ingress"): policy}, sets, family
    )


class Runner:
    """Records every command; answers read-backs from an empty kernel."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], bytes | None]] = []

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        self.calls.append((tuple(argv), stdin))
        if argv[0] == "nft" and stdin is None:
            return CommandResult(tuple(argv), 1, b"", b"Error: No such file or directory")
        return CommandResult(tuple(argv), 0, b"*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", b"")


def test_ipv6_in_ip6tables_syntax() -> None:
    state = small_state(V6)
    runner = Runner()
    applier = IptablesApplier(runner, family=V6)
    asyncio.run(applier.apply(iptables_render.render(state)))
    (save, _), (restore, data) = runner.calls
    assert save[0] == "ip6tables-save" and restore[0] == "ip6tables-restore"
    assert data is not None
    text = data.decode()
    assert '"vpcn:' in text and ' anti-spoofing" ! -s fd00:1::5/128 -j DROP' in text
    assert f"-p tcp -m set --match-set {CLIENTS6} src -m multiport --dports 80 -j MARK" in text
    assert f"-m set --match-set {HTTP6} dst,dst" in text
    assert '-p ipv6-icmp -m icmp6 --icmpv6-type 128/0 -j LOG --log-prefix "vpcn-packet: "' in text
    assert "-p ipv6-icmp -m icmp6 ! --icmpv6-type 128 -j DROP" in text
    assert "-m icmp " not in text and "10." not in text


def test_ipv6_ipsets_are_inet6_sets_of_their_own() -> None:
    runner = Runner()
    applier = IpsetApplier(runner, V6)
    asyncio.run(applier.apply_updates(small_state(V6).ipsets))
    data = runner.calls[-1][1]
    assert data is not None
    lines = data.decode().splitlines()
    assert f"create {CLIENTS6} hash:net family inet6 maxelem {ipset_render.MAXELEM}" in lines
    assert f"create {HTTP6} hash:ip,port family inet6 maxelem {ipset_render.MAXELEM}" in lines
    assert f"add {HTTP6} fd00:1::5,tcp:8080" in lines
    # ipset names are one namespace: each family's applier reads (and would destroy) only its own sets.
    v4 = names.ipset_name("s", "x")
    saved = f"create {v4} hash:net family inet\nadd {v4} 10.0.0.1\ncreate {CLIENTS6} hash:net family inet6\n"
    saved += f"add {CLIENTS6} fd00:2::1\n"
    assert ipset_render.parse_save(saved, family=V6) == {
        CLIENTS6: ipset_render.KernelSet("hash:net", frozenset({"fd00:2::1/128"}))
    }
    assert set(ipset_render.parse_save(saved)) == {v4}
    assert names.temp_ipset_name(CLIENTS6, V6).startswith("vpcn6t-")
    many = {CLIENTS6: IpSetSpec(CLIENTS6, "hash:net", frozenset(f"fd00:3::{i:x}/128" for i in range(100)))}
    swap = ipset_render.render_updates(many, {CLIENTS6: ipset_render.KernelSet("hash:net", frozenset())}, V6)
    assert swap[0] == f"create {names.temp_ipset_name(CLIENTS6, V6)} hash:net family inet6 maxelem 1048576"


def test_ipv6_in_an_nft_ip6_table() -> None:
    runner = Runner()
    applier = NftApplier(runner, V6)
    asyncio.run(applier.apply(nft_render.render(small_state(V6))))
    (read, _), (write, data) = runner.calls
    assert read == ("nft", "-j", "list", "table", "ip6", "vpcnet") and write == ("nft", "-f", "-")
    assert data is not None
    text = data.decode()
    assert text.startswith("add table ip6 vpcnet\n")
    assert f"add set ip6 vpcnet {CLIENTS6} {{ type ipv6_addr; flags interval; }}" in text
    assert f"add set ip6 vpcnet {HTTP6} {{ type ipv6_addr . inet_proto . inet_service; }}" in text
    assert f"add element ip6 vpcnet {HTTP6} {{ fd00:1::5 . tcp . 8080 }}" in text
    assert 'ip6 saddr != { fd00:1::5/128 } drop comment "vpcn:' in text
    assert f"meta l4proto tcp ip6 saddr @{CLIENTS6} th dport {{ 80 }}" in text
    assert f"ip6 daddr . meta l4proto . th dport @{HTTP6}" in text
    assert "meta l4proto ipv6-icmp icmpv6 type 128 icmpv6 code 0 log" in text
    assert "meta l4proto ipv6-icmp icmpv6 type != 128 drop" in text
    assert " ip " not in text.replace("add table ip6", "")
    # Read back from the kernel's JSON: an ipv6_addr set and a bare address is one /128.
    elements = ["fd00:2::1", {"prefix": {"addr": "fd00:9::", "len": 64}}]
    listing = json.dumps({"nftables": [{"set": {"name": CLIENTS6, "type": "ipv6_addr", "elem": elements}}]})
    view = parse_json(listing, V6)
    assert view.sets[CLIENTS6].members == frozenset({"fd00:2::1/128", "fd00:9::/64"})
    assert view.sets[CLIENTS6].kind == "hash:net"


def test_both_families_print_one_layout() -> None:
    """The family changes spelling only: the same chains with the same number of rules, per dialect; but
    for the ICMPv6 link protocol IPv6 pods may always send their node (vpcn-INPUT, before the dispatch)."""
    link = len(rule_layout.ICMPV6_LINK_TYPES) * len(small_state(V6).interface_prefixes)
    for render in (iptables_render.render, nft_render.render):
        v4, v6 = render(small_state(IpFamily.V4)), render(small_state(V6))
        assert list(v4.chains) == list(v6.chains)
        extra = {name: link if name == names.INPUT_CHAIN else 0 for name in v4.chains}
        assert [len(r) + extra[c] for c, r in v4.chains.items()] == [len(r) for r in v6.chains.values()]
        assert not any("icmpv6-type 13" in r or "icmpv6 type 13" in r for r in v4.chains[names.INPUT_CHAIN])
        input6 = v6.chains[names.INPUT_CHAIN]
        neighbour = [i for i, r in enumerate(input6) if "135" in r and "accept" in r.lower()]
        dispatch = [i for i, r in enumerate(input6) if names.FROM_WL_DISPATCH in r]
        assert neighbour and dispatch and max(neighbour) < min(dispatch)  # before the unknown-veth drop
    # And both dialects print the layout's chains (iptables adds dispatch children, nft base chains).
    layout = rule_layout.layout(small_state(V6))
    layout_chains = [
        item.chain if isinstance(item, rule_layout.Dispatch) else item.name for item in layout.items
    ]
    ipt = [
        c
        for c in iptables_render.render(small_state(V6)).chains
        if not c.startswith(("vpcn-fd-", "vpcn-td-"))
    ]
    nft = [c for c in nft_render.render(small_state(V6)).chains if not c.startswith("filter-")]
    assert ipt == nft == layout_chains


def test_the_layout_of_a_rule_is_one_list_of_terms() -> None:
    rule = PolicyRule(
        "allow",
        "tcp",
        src_sets=("a",),
        not_dst_sets=("b",),
        dst_ports=PortMatch((PortRange(90, 91), PortRange(80, 80)), ("np",)),
    )
    assert rule_layout.rule_matches(rule) == [
        (
            Protocol("tcp"),
            AddrSet("src", "a"),
            AddrSet("dst", "b", True),
            Ports("dst", (PortRange(80, 80), PortRange(90, 91))),
        ),
        (Protocol("tcp"), AddrSet("src", "a"), AddrSet("dst", "b", True), NamedPorts("dst", "np")),
    ]
    assert rule_layout.rule_matches(PolicyRule("deny", "icmp", icmp_type=3, icmp_code=1)) == [
        (Protocol("icmp"), Icmp(3, 1))
    ]
    assert rule_layout.rule_actions("allow") == (rule_layout.MarkSet(MARK_ACCEPT), rule_layout.RETURN)
    with pytest.raises(ValueError, match="rule action 'maybe'"):
        rule_layout.rule_actions("maybe")


def test_iptables_splits_what_it_cannot_say_in_one_rule() -> None:
    """Several anti-spoofing sources use the scratch mark; more than 15 multiport slots become alternatives
    (positive) or AND-ed matches (negated); nft says each in one rule."""
    endpoint = EndpointSpec("eni0aa", ("fd00::1/128", "fd00::2/128"))
    chain = rule_layout.endpoint_chain(endpoint, "egress", V6)
    ipt = iptables_render.print_chain(chain, V6)
    scratch = f"{MARK_SCRATCH:#x}/{MARK_SCRATCH:#x}"
    assert ipt[0].endswith(f"-j MARK --set-xmark 0x0/{MARK_SCRATCH:#x}")
    assert ipt[1].endswith(f"-s fd00::1/128 -j MARK --set-xmark {scratch}")
    assert ipt[2].endswith(f"-s fd00::2/128 -j MARK --set-xmark {scratch}")
    assert "anti-spoofing" in ipt[3] and ipt[3].endswith(f"-m mark --mark 0x0/{MARK_SCRATCH:#x} -j DROP")
    assert nft_render.print_chain(chain, V6)[0].startswith("ip6 saddr != { fd00::1/128, fd00::2/128 } drop")
    ports = tuple(PortRange.single(p) for p in range(1000, 1020))
    policy = PolicyChainSpec(
        "gnp/many",
        "ingress",
        (
            PolicyRule("deny", "tcp", dst_ports=PortMatch(ports)),
            PolicyRule("deny", "udp", not_dst_ports=PortMatch(ports)),
        ),
    )
    printed = iptables_render.print_chain(rule_layout.policy_chain(policy))
    assert len(printed) == 3
    assert printed[0].endswith(
        "-p tcp -m multiport --dports " + ",".join(str(p) for p in range(1000, 1015)) + " -j DROP"
    )
    assert printed[1].endswith("-p tcp -m multiport --dports 1015,1016,1017,1018,1019 -j DROP")
    assert "-m multiport ! --dports 1000," in printed[2] and "-m multiport ! --dports 1015," in printed[2]
    assert len(nft_render.print_chain(rule_layout.policy_chain(policy))) == 2
    with pytest.raises(ValueError, match="iptables cannot follow"):
        iptables_render.rule_lines(rule_layout.Rule((), (rule_layout.DROP, rule_layout.RETURN)), V6)


def test_a_state_and_its_family_must_agree() -> None:
    v4_pod = EndpointSpec("eni0aa", ("10.0.1.6/32",))
    wrong = DesiredState(("eni",), {"eni0aa": v4_pod}, {}, {}, V6)
    for render in (iptables_render.render, nft_render.render):
        with pytest.raises(
            ValueError, match=re.escape("endpoint eni0aa: network 10.0.1.6/32 is not an IPv6 network")
        ):
            render(wrong)
    with pytest.raises(ValueError, match="IPv6 render given to the IPv4"):
        asyncio.run(IptablesApplier(Runner()).apply(iptables_render.render(small_state(V6))))
    with pytest.raises(ValueError, match="IPv6 render given to the IPv4"):
        asyncio.run(NftApplier(Runner()).apply(nft_render.render(small_state(V6))))
    for backend in ("iptables", "nftables"):
        runner = Runner()
        with pytest.raises(ValueError, match="IPv4 desired state given to an IPv6 data plane"):
            asyncio.run(make_dataplane(backend, runner, V6).apply(small_state(IpFamily.V4)))
        assert runner.calls == [], "refused before anything ran"


def test_the_family_spells_each_tool() -> None:
    assert [f.iptables_restore for f in IpFamily] == ["iptables-restore", "ip6tables-restore"]
    assert [f.ipset_family for f in IpFamily] == ["inet", "inet6"]
    assert [f.nft_table_family for f in IpFamily] == ["ip", "ip6"]
    assert [f.address_bytes for f in IpFamily] == [4, 16]
    assert IpFamily.V6.packed("fd00::1") == bytes.fromhex("fd000000000000000000000000000001")
    with pytest.raises(ValueError, match=re.escape("address 10.0.0.1 is not an IPv6 address")):
        IpFamily.V6.packed("10.0.0.1")
    with pytest.raises(ValueError, match="'nope' is not an IP address"):
        IpFamily.V4.packed("nope")
