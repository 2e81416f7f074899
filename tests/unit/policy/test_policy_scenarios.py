"""The ported upstream NetworkPolicy e2e cases (and vpcnet's own) against both evaluators."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpcnet.policy.evaluate import Flow, endpoint, evaluate
from vpcnet.policy.matrix import reachability
from vpcnet.policy.model import protocol_from_text
from vpcnet.policy.scenarios import ScenarioCheck, load_scenarios
from vpcnet.policy.state import ClusterState

DATA = Path(__file__).resolve().parents[2] / "data" / "netpol"
CHECKS = load_scenarios([DATA])


def _id(check: ScenarioCheck) -> str:
    return f"{Path(check.source.split(':')[0]).stem}:{check.name}:{check.protocol}/{check.port}"


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


@pytest.mark.parametrize("check", CHECKS, ids=_id)
def test_per_flow_evaluator_matches_expectation(check: ScenarioCheck) -> None:
    state = ClusterState.from_resources(check.resources)
    proto = protocol_from_text(check.protocol)
    wrong = []
    for s, d, exp in check.expected_cells():
        verdict = evaluate(state, Flow(endpoint(state, s), endpoint(state, d), proto, check.port))
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
