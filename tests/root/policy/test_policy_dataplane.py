"""Kernel tests of the policy data plane, the same for both back ends (iptables+ipset and nftables).

Each test builds a node netns with pod netns on CNI-named veths, programs it, and sends real packets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import policy_netkit as netkit
import pytest

from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.kernel_cmd import CommandResult, DataplaneError, SubprocessRunner
from vpcnet.dataplane.policy_backend import BACKENDS, PolicyDataplane, make_dataplane
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

ALLOW_FROM = names.ipset_name("s", "role == 'client'")


@pytest.fixture
def node() -> Iterator[netkit.Node]:
    with netkit.node() as made:
        yield made


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def endpoint(pod: netkit.Pod, ingress: Sequence[str] = (), egress: Sequence[str] = ()) -> EndpointSpec:
    return EndpointSpec(
        iface=pod.veth,
        addresses=(f"{pod.ip}/32",),
        ingress=(TierPolicies("default", tuple(ingress)),) if ingress else (),
        egress=(TierPolicies("default", tuple(egress)),) if egress else (),
    )


def state(
    pods: Sequence[netkit.Pod],
    ingress: dict[str, Sequence[str]] | None = None,
    clients: Sequence[netkit.Pod] = (),
) -> DesiredState:
    """Pods on the node; ingress maps a pod name to policy ids selecting it; "web" allows clients on TCP 80
    and UDP 53 only; "deny-81" denies TCP 81 and passes nothing else."""
    ingress = ingress or {}
    policies = {
        ("np/t/web", "ingress"): PolicyChainSpec(
            "np/t/web",
            "ingress",
            (
                PolicyRule(
                    "allow", "tcp", src_sets=(ALLOW_FROM,), dst_ports=PortMatch((PortRange.single(80),))
                ),
                PolicyRule(
                    "allow", "udp", src_sets=(ALLOW_FROM,), dst_ports=PortMatch((PortRange.single(53),))
                ),
            ),
        ),
    }
    sets = {ALLOW_FROM: IpSetSpec(ALLOW_FROM, "hash:net", frozenset(f"{p.ip}/32" for p in clients))}
    return DesiredState(
        ("eni",),
        {p.veth: endpoint(p, ingress.get(p.name, ())) for p in pods},
        policies,
        sets,
    )


def kernel_text(node: netkit.Node, backend: str) -> str:
    if backend == "iptables":
        rules = netkit.sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "filter")
        sets = netkit.sh("ip", "netns", "exec", node.netns, "ipset", "save")
        body = [line for line in rules.splitlines() if not line.startswith("#")]
        return "\n".join(body) + sets
    return netkit.sh("ip", "netns", "exec", node.netns, "nft", "list", "ruleset")


def test_dispatch_default_allow_and_unknown_veth_dropped(node: netkit.Node, backend: str) -> None:
    a, b, stranger = node.add_pod("a"), node.add_pod("b"), node.add_pod("stranger")
    assert netkit.tcp_reaches(stranger, b, 80), "no rules yet: the plain node forwards"
    dp = make_dataplane(backend, SubprocessRunner(node.netns))
    run(dp.apply(state([a, b])))
    assert netkit.tcp_reaches(a, b, 80)
    assert netkit.tcp_reaches(b, a, 8080)
    assert netkit.udp_reaches(a, b, 5353)
    # A veth of our prefix that the agent does not know is dropped both ways (fail closed).
    assert not netkit.tcp_connects(stranger, b, 80)
    assert not netkit.tcp_connects(a, stranger, 80)


def test_policy_allows_selected_sources_and_ports_only(node: netkit.Node, backend: str) -> None:
    client, other, web = node.add_pod("client"), node.add_pod("other"), node.add_pod("web")
    dp = make_dataplane(backend, SubprocessRunner(node.netns))
    run(dp.apply(state([client, other, web], {"web": ["np/t/web"]}, clients=[client])))
    assert netkit.tcp_reaches(client, web, 80)
    assert not netkit.tcp_connects(client, web, 81), "port not allowed: end of tier drops"
    assert netkit.udp_reaches(client, web, 53)
    assert not netkit.udp_round_trip(client, web, 54)
    assert not netkit.tcp_connects(other, web, 80), "source not in the selector's set"
    assert netkit.tcp_reaches(web, other, 80), "egress of web is not selected: allowed"
    # The set changes (a label change): only the set is rewritten, and it takes effect.
    stats = run(dp.apply(state([client, other, web], {"web": ["np/t/web"]}, clients=[client, other])))
    assert stats.total > 0
    assert netkit.tcp_reaches(other, web, 80)


def test_anti_spoofing(node: netkit.Node, backend: str) -> None:
    a, b = node.add_pod("a"), node.add_pod("b")
    netkit.sh("ip", "-n", a.netns, "addr", "add", "10.77.0.250/32", "dev", "eth0")
    dp = make_dataplane(backend, SubprocessRunner(node.netns))
    run(dp.apply(state([a, b])))
    assert netkit.tcp_reaches(a, b, 80, source_ip=a.ip)
    assert not netkit.tcp_connects(a, b, 80, source_ip="10.77.0.250"), "a pod sends only from its own address"


def test_second_apply_changes_nothing_and_sends_nothing(node: netkit.Node, backend: str) -> None:
    a, b = node.add_pod("a"), node.add_pod("b")
    runner = SubprocessRunner(node.netns)
    dp = make_dataplane(backend, runner)
    desired = state([a, b], {"b": ["np/t/web"]}, clients=[a])
    first = run(dp.apply(desired))
    assert first.total > 0
    before = kernel_text(node, backend)
    calls = runner.calls
    second = run(dp.apply(desired))
    assert second.total == 0 and runner.calls == calls, "an idle apply runs no command"
    # A resync reads the kernel, finds it equal, and writes nothing either.
    dp.resync()
    third = run(dp.apply(state([a, b], {"b": ["np/t/web"]}, clients=[a])))
    assert third.total == 0
    assert kernel_text(node, backend) == before


def _delete_end_of_tier_drop(node: netkit.Node, backend: str, web: netkit.Pod) -> None:
    chain = names.to_workload_chain(web.veth)
    if backend == "iptables":
        save = netkit.sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "filter")
        rules = [line for line in save.splitlines() if line.startswith(f"-A {chain} ")]
        index = next(i for i, line in enumerate(rules, 1) if "end of tier" in line)
        netkit.sh("ip", "netns", "exec", node.netns, "iptables", "-D", chain, str(index))
    else:
        listing = netkit.sh(
            "ip", "netns", "exec", node.netns, "nft", "-a", "list", "chain", "ip", "vpcnet", chain
        )
        line = next(line for line in listing.splitlines() if "end of tier" in line)
        handle = line.rsplit("# handle ", 1)[1].strip()
        netkit.sh(
            "ip",
            "netns",
            "exec",
            node.netns,
            "nft",
            "delete",
            "rule",
            "ip",
            "vpcnet",
            chain,
            "handle",
            handle,
        )


def test_resync_repairs_a_rule_deleted_by_hand(node: netkit.Node, backend: str) -> None:
    client, other, web = node.add_pod("client"), node.add_pod("other"), node.add_pod("web")
    dp = make_dataplane(backend, SubprocessRunner(node.netns))
    desired = state([client, other, web], {"web": ["np/t/web"]}, clients=[client])
    run(dp.apply(desired))
    assert not netkit.tcp_connects(other, web, 80)
    _delete_end_of_tier_drop(node, backend, web)
    assert netkit.tcp_reaches(other, web, 80), "someone opened the pod by deleting our drop"
    assert run(dp.apply(desired)).total == 0, "without a resync we trust what we applied"
    dp.resync()
    assert run(dp.apply(desired)).total > 0
    assert not netkit.tcp_connects(other, web, 80), "the resync put the drop back"


class FailingRunner:
    """Fails every write (iptables-restore, ipset restore, nft -f) while failing is set."""

    def __init__(self, inner: SubprocessRunner) -> None:
        self.inner = inner
        self.failing = False

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        if self.failing and stdin is not None:
            return CommandResult(tuple(argv), 1, b"", b"injected failure")
        return await self.inner.run(argv, stdin)


def test_fail_closed_when_programming_fails(node: netkit.Node, backend: str) -> None:
    a, b = node.add_pod("a"), node.add_pod("b")
    runner = FailingRunner(SubprocessRunner(node.netns))
    dp: PolicyDataplane = make_dataplane(backend, runner)
    run(dp.apply(state([a, b])))
    late = node.add_pod("late")
    runner.failing = True
    with pytest.raises(DataplaneError, match="injected failure"):
        run(dp.apply(state([a, b, late])))
    assert not netkit.tcp_connects(late, b, 80), "a pod we failed to program stays dropped"
    assert not netkit.tcp_connects(a, late, 80)
    assert netkit.tcp_reaches(a, b, 80), "the pods programmed before keep working"
    runner.failing = False
    run(dp.apply(state([a, b, late])))
    assert netkit.tcp_reaches(late, b, 80)


def test_rules_of_others_are_never_flushed(node: netkit.Node, backend: str) -> None:
    a, b = node.add_pod("a"), node.add_pod("b")
    ns = node.netns
    netkit.sh(
        "ip",
        "netns",
        "exec",
        ns,
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.77.0.0/16",
        "-m",
        "comment",
        "--comment",
        "cni snat",
        "-j",
        "SNAT",
        "--to-source",
        "10.77.255.1",
    )
    netkit.sh(
        "ip",
        "netns",
        "exec",
        ns,
        "iptables",
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-i",
        "eni+",
        "-j",
        "CONNMARK",
        "--restore-mark",
        "--mask",
        "0x80",
    )
    netkit.sh(
        "ip",
        "netns",
        "exec",
        ns,
        "iptables",
        "-A",
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        "theirs",
        "-j",
        "RETURN",
    )
    dp = make_dataplane(backend, SubprocessRunner(ns))
    run(dp.apply(state([a, b])))
    dp.resync()
    run(dp.apply(state([b])))
    run(dp.remove_all())
    save = netkit.sh("ip", "netns", "exec", ns, "iptables-save")
    assert "cni snat" in save and "--restore-mark" in save and "theirs" in save
    assert "vpcn" not in save
    assert "vpcnet" not in netkit.sh("ip", "netns", "exec", ns, "nft", "list", "tables")
    assert "vpcn" not in netkit.sh("ip", "netns", "exec", ns, "ipset", "list", "-n")


def test_every_rule_form_loads_into_the_kernel(node: netkit.Node, backend: str) -> None:
    """The golden tests' sample (log, pass, deny, named ports, icmp type/code, negated ports and sets,
    SCTP ranges, tiers with a pass default) is accepted by the real tools, and re-applies to nothing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "dataplane"))
    from test_policy_render_golden import sample_state

    runner = SubprocessRunner(node.netns)
    dp = make_dataplane(backend, runner)
    assert run(dp.apply(sample_state())).total > 0
    dp.resync()
    assert run(dp.apply(sample_state())).total == 0
    rules = not_icmp_rule()
    assert run(dp.apply(rules)).total > 0


def not_icmp_rule() -> DesiredState:
    """A rule negating an ICMP type and code (nft needs a concatenated set for that)."""
    policy = PolicyChainSpec(
        "gnp/no-echo", "egress", (PolicyRule("deny", "icmp", not_icmp_type=8, not_icmp_code=0),)
    )
    endpoint = EndpointSpec("eni0aa", ("10.0.1.6/32",), egress=(TierPolicies("default", ("gnp/no-echo",)),))
    return DesiredState(("eni",), {"eni0aa": endpoint}, {("gnp/no-echo", "egress"): policy}, {})


def test_a_bare_node_is_closed_at_start_and_a_restart_keeps_what_runs(
    node: netkit.Node, backend: str
) -> None:
    """The agent's first act on a node without rules of ours: pod veths are dropped until programmed (no
    datastore needed). On a restart the rules of the earlier run stay: the pods they cover keep working."""
    from vpcnet.agent.policy import close_bare_node

    a, b = node.add_pod("a"), node.add_pod("b")
    assert netkit.tcp_reaches(a, b, 80), "a bare node forwards everything"
    assert run(close_bare_node(make_dataplane(backend, SubprocessRunner(node.netns)), ("eni",)))
    assert not netkit.tcp_connects(a, b, 80), "closed: no veth is known yet"
    run(make_dataplane(backend, SubprocessRunner(node.netns)).apply(state([a, b])))
    assert netkit.tcp_reaches(a, b, 80)
    restarted = make_dataplane(backend, SubprocessRunner(node.netns))
    assert not run(close_bare_node(restarted, ("eni",))), "our rules are there: nothing is changed"
    assert netkit.tcp_reaches(a, b, 80), "the pods programmed before the restart keep working"
    late = node.add_pod("late")
    assert not netkit.tcp_connects(late, b, 80), "a veth made meanwhile waits for the agent"


def test_resync_puts_our_hook_back_on_top_of_a_rule_inserted_above_it(node: netkit.Node) -> None:
    """iptables: an ACCEPT someone inserts at the top of FORWARD (kube-proxy prepends its jumps) would
    bypass policy; the resync moves our hook back above it and leaves that rule in place."""
    client, other, web = node.add_pod("client"), node.add_pod("other"), node.add_pod("web")
    dp = make_dataplane("iptables", SubprocessRunner(node.netns))
    desired = state([client, other, web], {"web": ["np/t/web"]}, clients=[client])
    run(dp.apply(desired))
    assert not netkit.tcp_connects(other, web, 80)
    foreign = ["-m", "comment", "--comment", "theirs-on-top", "-j", "ACCEPT"]
    netkit.sh("ip", "netns", "exec", node.netns, "iptables", "-I", "FORWARD", "1", *foreign)
    assert netkit.tcp_reaches(other, web, 80), "the rule above our hook decides first"
    dp.resync()
    assert run(dp.apply(desired)).total > 0
    forward = netkit.sh("ip", "netns", "exec", node.netns, "iptables", "-S", "FORWARD").splitlines()
    assert f"-j {names.FORWARD_CHAIN}" in forward[1] and "theirs-on-top" in forward[2], forward
    assert not netkit.tcp_connects(other, web, 80), "policy decides again"
    dp.resync()
    assert run(dp.apply(desired)).total == 0, "in place: nothing more to do"


def test_an_ipv6_state_loads_beside_the_ipv4_one(node: netkit.Node, backend: str) -> None:
    """The same layout for IPv6 (ip6tables + inet6 sets, or an ip6 nft table) is accepted by the real tools
    and re-applies to nothing; each family's data plane owns only its own rules and sets."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "dataplane"))
    from test_policy_render_family import small_state

    runner = SubprocessRunner(node.netns)
    v4, v6 = make_dataplane(backend, runner), make_dataplane(backend, runner, IpFamily.V6)
    assert run(v4.apply(small_state(IpFamily.V4))).total > 0
    assert run(v6.apply(small_state(IpFamily.V6))).total > 0
    for dp, family in ((v4, IpFamily.V4), (v6, IpFamily.V6)):
        dp.resync()
        assert run(dp.apply(small_state(family))).total == 0, f"IPv{family.value} read back as applied"
    if backend == "iptables":
        saved6 = netkit.sh("ip", "netns", "exec", node.netns, "ip6tables-save")
        assert "-m icmp6 --icmpv6-type 128/0" in saved6 and "! -s fd00:1::5/128" in saved6
        assert "family inet6" in netkit.sh("ip", "netns", "exec", node.netns, "ipset", "list", "-t")
    else:
        tables = netkit.sh("ip", "netns", "exec", node.netns, "nft", "list", "tables")
        assert "table ip vpcnet" in tables and "table ip6 vpcnet" in tables
    run(v6.remove_all())
    assert run(v6.installed()) is False
    v4.resync()
    assert run(v4.apply(small_state(IpFamily.V4))).total == 0, "the IPv4 data plane is untouched"
    run(v4.remove_all())
    assert "vpcn" not in netkit.sh("ip", "netns", "exec", node.netns, "ipset", "list", "-n")
