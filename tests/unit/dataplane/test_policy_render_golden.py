"""Golden tests of the rendered rule text (both back ends) and of the restore input the appliers send."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from vpcnet.dataplane import iptables_render, names, nft_render
from vpcnet.dataplane.iptables_apply import IptablesApplier
from vpcnet.dataplane.kernel_cmd import CommandResult
from vpcnet.dataplane.nft_apply import NftApplier
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

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("VPCNET_UPDATE_GOLDEN") == "1"

WEB_CLIENTS = names.ipset_name("s", "role == 'client'")
BLOCK = names.ipset_name("n", "10.0.0.0/8")
BLOCK_EXCEPT = names.ipset_name("n", "10.9.0.0/16")
HTTP = names.ipset_name("p", "*,6,http")


def sample_state() -> DesiredState:
    policies = {
        ("knp/default/web", "ingress"): PolicyChainSpec(
            "knp/default/web",
            "ingress",
            (
                PolicyRule(
                    "allow",
                    "tcp",
                    src_sets=(WEB_CLIENTS,),
                    dst_ports=PortMatch((PortRange(80, 80),), (HTTP,)),
                ),
                PolicyRule("allow", "udp", src_sets=(BLOCK,), not_src_sets=(BLOCK_EXCEPT,)),
                PolicyRule("allow", "sctp", dst_ports=PortMatch((PortRange(9000, 9010),))),
            ),
        ),
        ("gnp/tiered", "egress"): PolicyChainSpec(
            "gnp/tiered",
            "egress",
            (
                PolicyRule("log", "icmp", icmp_type=8, icmp_code=0),
                PolicyRule("deny", "tcp", not_dst_ports=PortMatch((PortRange(443, 443),))),
                PolicyRule("pass"),
            ),
        ),
    }
    endpoints = {
        "eni82111e10a96": EndpointSpec(
            "eni82111e10a96",
            ("10.0.1.5/32",),
            ingress=(TierPolicies("default", ("knp/default/web",)),),
            egress=(TierPolicies("security", ("gnp/tiered",), "pass"),),
        ),
        "eni0aa": EndpointSpec("eni0aa", ("10.0.1.6/32",)),
        "eni0ab": EndpointSpec("eni0ab", ("10.0.1.7/32",)),
    }
    sets = {
        WEB_CLIENTS: IpSetSpec(WEB_CLIENTS, "hash:net", frozenset({"10.0.2.1/32", "10.0.3.1/32"})),
        BLOCK: IpSetSpec(BLOCK, "hash:net", frozenset({"10.0.0.0/8"})),
        BLOCK_EXCEPT: IpSetSpec(BLOCK_EXCEPT, "hash:net", frozenset({"10.9.0.0/16"})),
        HTTP: IpSetSpec(HTTP, "hash:ip,port", frozenset({"10.0.1.5,tcp:8080"})),
    }
    return DesiredState(("eni",), endpoints, policies, sets)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"golden file {path} did not exist; written now, check it in")
    assert text == path.read_text()


class RecordingRunner:
    """Answers the read-back commands from a canned kernel and records the writes."""

    def __init__(self, save: str = "") -> None:
        self.save = save
        self.writes: list[bytes] = []

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        if stdin is not None:
            self.writes.append(stdin)
            return CommandResult(tuple(argv), 0, b"", b"")
        if argv[0] == "nft":
            return CommandResult(tuple(argv), 1, b"", b"Error: No such file or directory")
        return CommandResult(tuple(argv), 0, self.save.encode(), b"")


def test_iptables_first_apply_golden() -> None:
    runner = RecordingRunner(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    )
    applier = IptablesApplier(runner)
    asyncio.run(applier.apply(iptables_render.render(sample_state())))
    (restore,) = runner.writes
    check_golden("iptables_first_apply.txt", restore.decode())
    # The same state again: nothing is sent.
    asyncio.run(applier.apply(iptables_render.render(sample_state())))
    assert len(runner.writes) == 1


def test_nft_first_apply_golden() -> None:
    runner = RecordingRunner()
    applier = NftApplier(runner)
    asyncio.run(applier.apply(nft_render.render(sample_state())))
    (transaction,) = runner.writes
    check_golden("nft_first_apply.txt", transaction.decode())
    asyncio.run(applier.apply(nft_render.render(sample_state())))
    assert len(runner.writes) == 1


def test_incremental_change_sends_only_the_changed_chains() -> None:
    state = sample_state()
    runner = RecordingRunner("*filter\n:FORWARD ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    applier = IptablesApplier(runner)
    asyncio.run(applier.apply(iptables_render.render(state)))
    endpoints = dict(state.endpoints)
    endpoints["eni0ac"] = EndpointSpec("eni0ac", ("10.0.1.8/32",))
    asyncio.run(
        applier.apply(
            iptables_render.render(
                DesiredState(state.interface_prefixes, endpoints, state.policies, state.ipsets)
            )
        )
    )
    text = runner.writes[-1].decode()
    check_golden("iptables_add_endpoint.txt", text)
    assert names.policy_chain("knp/default/web", "ingress") not in text


def test_rendered_names_fit_the_kernel() -> None:
    rendered = iptables_render.render(sample_state())
    assert all(len(chain) <= names.IPTABLES_CHAIN_MAX for chain in rendered.chains)
    assert all(len(s) <= names.IPSET_NAME_MAX for s in sample_state().ipsets)
    assert all(len(names.temp_ipset_name(s)) <= names.IPSET_NAME_MAX for s in sample_state().ipsets)
