"""The ported upstream NetworkPolicy e2e cases (and vpcnet's own) against both evaluators, on IPv4 pods, on
IPv6 pods (the IPv4 addresses embedded in a /96, the files' blocks translated) and on dual-stack pods."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpcnet.policy.evaluate import Flow, endpoint_in_family, evaluate
from vpcnet.policy.matrix import reachability
from vpcnet.policy.model import protocol_from_text
from vpcnet.policy.scenarios import ScenarioCheck, ScenarioError, Topology, embedded_ipv6, load_scenarios
from vpcnet.policy.state import ClusterState

DATA = Path(__file__).resolve().parents[2] / "data" / "netpol"
IPS4 = Topology().default_ips()
IPS6 = {ref: embedded_ipv6(ip) for ref, ip in IPS4.items()}
# Single-family pods: the checks over the pods' family (the others need an address the pods lack).
CHECKS = [c for c in load_scenarios([DATA]) if c.probe_family == 4]
CHECKS += [c for c in load_scenarios([DATA], pod_ips=IPS6) if c.probe_family == 6]
# Dual-stack pods, the files written in either family: every check over its own family.
DUAL = load_scenarios([DATA, DATA / "dual"], pod_ips={r: [IPS4[r], IPS6[r]] for r in IPS4})
DUAL += load_scenarios([DATA, DATA / "dual"], pod_ips={r: [IPS6[r], IPS4[r]] for r in IPS4})


def _id(check: ScenarioCheck) -> str:
    file = Path(check.source.split(":")[0]).stem
    return f"{file}:{check.name}:{check.protocol}/{check.port}:ipv{check.probe_family}"


def test_all_upstream_cases_are_ported() -> None:
    upstream = load_scenarios([DATA / "upstream_tcp.yaml", DATA / "upstream_udp_sctp.yaml"])
    assert len({c.source for c in upstream}) == 48
    for check in upstream:
        assert len(check.expected) == 9 and all(len(row) == 9 for row in check.expected.values())


@pytest.mark.parametrize("check", CHECKS, ids=_id)
def test_matrix_matches_expectation(check: ScenarioCheck) -> None:
    state = ClusterState.from_resources(check.resources)
    got = reachability(state, check.port, protocol_from_text(check.protocol)).to_dict()
    wrong = [(s, d, exp) for s, d, exp in check.expected_cells() if got[s][d] != exp]
    assert not wrong, (
        f"{check.source} {check.protocol}/{check.port}: cells (src, dst, expected) differ: {wrong}"
    )


@pytest.mark.parametrize("check", CHECKS + DUAL, ids=_id)
def test_per_flow_evaluator_matches_expectation(check: ScenarioCheck) -> None:
    state = ClusterState.from_resources(check.resources)
    proto = protocol_from_text(check.protocol)
    version = check.probe_family
    wrong = []
    for s, d, exp in check.expected_cells():
        src, dst = endpoint_in_family(state, s, version), endpoint_in_family(state, d, version)
        verdict = evaluate(state, Flow(src, dst, proto, check.port))
        if verdict.allowed != exp:
            wrong.append((s, d, exp, verdict.explanation))
    assert not wrong, f"{check.source}: {wrong}"


def test_lab_addresses_can_replace_the_defaults() -> None:
    ips = {f"{ns}/{p}": f"172.16.{i}.{j + 2}" for i, ns in enumerate("xyz") for j, p in enumerate("abc")}
    checks = load_scenarios([DATA / "upstream_tcp.yaml"], pod_ips=ips)
    cidr = next(c for c in checks if c.name == "egress-to-cidr")
    policy = next(r for r in cidr.resources if r.KIND == "NetworkPolicy")
    assert policy.to_dict()["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] == "172.16.1.3/32"
    state = ClusterState.from_resources(cidr.resources)
    got = reachability(state, 80, 6).to_dict()
    assert got["x/a"]["y/b"] and not got["x/a"]["y/a"]


def test_every_family_runs_the_upstream_cases() -> None:
    upstream = {c.source.split(": ", 1)[1] for c in CHECKS if "upstream_" in c.source}
    assert len(upstream) == 48
    assert {c.probe_family for c in CHECKS if "upstream_" in c.source} == {4, 6}
    assert {c.probe_family for c in DUAL if "dual_stack" in c.source} == {4, 6}


def test_ipv6_blocks_keep_upstreams_wide_block_and_shift_the_rest_by_96_bits() -> None:
    checks = load_scenarios([DATA / "upstream_tcp.yaml", DATA / "beyond_upstream.yaml"], pod_ips=IPS6)

    def block(name: str, direction: str, key: str) -> object:
        check = next(c for c in checks if c.name == name)
        policy = next(r for r in check.resources if r.KIND == "NetworkPolicy")
        return policy.to_dict()["spec"][direction][0][key][0]["ipBlock"]

    # upstream: the pod's address /4 in both families, the except a host mask (/32 or /128)
    assert block("egress-cidr-except", "egress", "to") == {
        "cidr": "fd00:77::a00:10a/4",
        "except": ["fd00:77::a00:10b/128"],
    }
    # one namespace's /24 over the embedded IPv4 addresses
    assert block("ingress-from-ipblock-with-except", "ingress", "from") == {
        "cidr": "fd00:77::a00:20a/120",
        "except": ["fd00:77::a00:20b/128"],
    }


def test_a_family_the_pod_lacks_is_a_clear_error() -> None:
    with pytest.raises(
        ScenarioError,
        match=r"dual_stack.yaml: egress-to-one-pod-per-family step 0: no IPv6 address for pod 'z/c'",
    ):
        load_scenarios([DATA / "dual"], pod_ips=IPS4)
