"""`vpcnet policy matrix | explain | selector` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vpcnet.cli.main import app

runner = CliRunner()

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {pod: c}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.3}
"""

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: http}]}]
"""


def _files(tmp_path: Path) -> list[str]:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policy.yaml").write_text(POLICY)
    return ["-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "policy.yaml")]


def test_matrix_json_is_exactly_the_documented_shape(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "matrix", *_files(tmp_path), "--port", "80", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "x/a": {"x/a": False, "x/b": True, "y/c": True},
        "x/b": {"x/a": True, "x/b": True, "y/c": True},
        "y/c": {"x/a": False, "x/b": True, "y/c": True},
    }
    other_port = runner.invoke(app, ["policy", "matrix", *_files(tmp_path), "--port", "81", "-o", "json"])
    assert json.loads(other_port.stdout)["x/b"]["x/a"] is False


def test_matrix_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "matrix", *_files(tmp_path), "--port", "80", "--protocol", "tcp"])
    assert result.exit_code == 0, result.output
    assert "x/a" in result.stdout and "✗" in result.stdout and "7 of 9 pairs allowed" in result.stdout


def test_explain_names_tier_policy_and_rule(tmp_path: Path) -> None:
    args = ["policy", "explain", *_files(tmp_path), "--port", "80"]
    allowed = runner.invoke(app, [*args, "--from", "x/b", "--to", "x/a"])
    assert allowed.exit_code == 0, allowed.output
    assert "ALLOWED" in allowed.stdout and "tier 'default', policy knp/x/web, rule 0" in allowed.stdout
    denied = runner.invoke(app, [*args, "--from", "y/c", "--to", "10.0.0.1"])
    assert "DENIED" in denied.stdout and "end of tier 'default'" in denied.stdout
    external = runner.invoke(app, [*args, "--from", "x/a", "--to", "192.168.7.7"])
    assert "ALLOWED" in external.stdout and "no policy selects the pod" in external.stdout


def test_selector_command() -> None:
    yes = runner.invoke(app, ["policy", "selector", "app == 'web' && env != 'dev'", "--labels", "app=web"])
    assert (yes.exit_code, yes.stdout.strip()) == (0, "true")
    no = runner.invoke(app, ["policy", "selector", "app in {'db'}", "--labels", "app=web,x=y"])
    assert (no.exit_code, no.stdout.strip()) == (0, "false")
    bad = runner.invoke(app, ["policy", "selector", "app = 'web'", "--labels", "app=web"])
    assert bad.exit_code == 2
    assert "position 4" in bad.output


def test_bad_files_exit_2_naming_file_document_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLUSTER + "---\n" + POLICY.replace("port: http", "port: 99999"))
    result = runner.invoke(app, ["policy", "matrix", "-f", str(bad), "--port", "80"])
    assert result.exit_code == 2
    assert f"{bad}:25 (document 5) NetworkPolicy x/web: spec.ingress[0].ports[0].port" in result.output
    missing = runner.invoke(app, ["policy", "matrix", "-f", str(tmp_path / "nope.yaml"), "--port", "80"])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    unknown = runner.invoke(app, ["policy", "explain", *_files(tmp_path), "--from", "x/zz", "--to", "x/a"])
    assert unknown.exit_code == 2 and "no pod 'x/zz'" in unknown.output
    neither = runner.invoke(app, ["policy", "explain", *_files(tmp_path), "--from", "zz", "--to", "x/a"])
    assert neither.exit_code == 2 and "neither NAMESPACE/POD nor an IP address" in neither.output
    proto = runner.invoke(app, ["policy", "matrix", *_files(tmp_path), "--port", "80", "--protocol", "QUIC"])
    assert proto.exit_code == 2 and "unknown protocol" in proto.output
    policy = str(tmp_path / "policy.yaml")
    twice = runner.invoke(app, ["policy", "matrix", *_files(tmp_path), "-f", policy, "--port", "80"])
    assert twice.exit_code == 2
    assert f"NetworkPolicy x/web: defined more than once (in {policy}, {policy})" in twice.output


def test_show_lists_the_compiled_model(tmp_path: Path) -> None:
    everything = runner.invoke(app, ["policy", "show", *_files(tmp_path)])
    assert everything.exit_code == 0, everything.output
    assert "tier default" in everything.stdout and "knp/x/web order 1000.0 types Ingress" in everything.stdout
    assert "ingress[0] Allow protocol TCP" in everything.stdout
    assert "to [ports http] (from spec.ingress[0])" in everything.stdout
    one = runner.invoke(app, ["policy", "show", *_files(tmp_path), "--pod", "x/a"])
    assert "Egress: no policy selects the pod" in one.stdout and "[0] Allow protocol TCP" in one.stdout
    missing = runner.invoke(app, ["policy", "show", *_files(tmp_path), "--pod", "x/nope"])
    assert missing.exit_code == 2
