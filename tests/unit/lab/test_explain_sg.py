"""`vpcnet policy explain --lab`'s text: which layer denied (network policy, a security group, both)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpcnet.api import load_documents
from vpcnet.cli.main import app
from vpcnet.cli.policy import explain_both
from vpcnet.lab.sgverdict import SgVerdict
from vpcnet.policy.evaluate import Flow, Verdict, endpoint, evaluate
from vpcnet.policy.state import ClusterState

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.2.20}
"""
DENY_B = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}
"""
MISSING = "security group: no ingress rule of sg-w (web) on eni-b allows TCP/80 from 10.0.1.10"


def _verdict(text: str) -> Verdict:
    state = ClusterState.from_resources(load_documents(text.encode(), "t.yaml"))
    return evaluate(state, Flow(endpoint(state, "x/a"), endpoint(state, "x/b"), 6, 80))


@pytest.mark.parametrize(
    ("policies", "groups", "head", "last"),
    [
        ("", SgVerdict(True, "security groups allow"), "ALLOWED", "security groups: allowed"),
        ("", SgVerdict(False, MISSING), "DENIED by security group", MISSING),
        (DENY_B, SgVerdict(True, "security groups allow"), "DENIED by network policy", "allowed"),
        (DENY_B, SgVerdict(False, MISSING), "DENIED by network policy and security group", MISSING),
        ("", SgVerdict(True, ""), "ALLOWED", "security groups: not crossed"),
    ],
)
def test_the_denying_layer_is_named(policies: str, groups: SgVerdict, head: str, last: str) -> None:
    text = explain_both(_verdict(PODS + policies), groups)
    lines = text.splitlines()
    assert lines[0] == f"x/a -> x/b:80 TCP: {head}"
    assert len(lines) == 4 and last in lines[3]
    assert "deny-b" in text if policies else "deny-b" not in text


def test_prefix_needs_lab(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PODS)
    result = CliRunner().invoke(
        app, ["policy", "explain", "-f", str(path), "--from", "x/a", "--to", "x/b", "--prefix", "zz"]
    )
    assert result.exit_code == 2 and "--prefix goes with --lab" in result.output
