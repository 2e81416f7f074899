"""deploy/iam-policy.json grants exactly the EC2 actions the agent's cloud layer calls (and
deploy/iam-policy-branch-controller.json the branch controller's), and
requirements-runtime.lock (what the image installs) is the runtime closure of pyproject's dependencies at
requirements.lock's versions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from deployfiles import DEPLOY, ROOT, script


def ec2_actions_called() -> set[str]:
    """Every action vpcnet/cloud passes to its one EC2 entry point, `self._call("Action", ...)`."""
    actions = set()
    for path in (ROOT / "vpcnet" / "cloud").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_call"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                actions.add(node.args[0].value)
    return actions


def test_iam_policy_lists_exactly_the_ec2_actions_the_agent_calls() -> None:
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    granted = [a for s in policy["Statement"] for a in s["Action"]]
    assert len(granted) == len(set(granted)), "an action is granted twice"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    called = ec2_actions_called()
    assert len(called) >= 10  # the scan found the calls, not nothing
    assert set(granted) == {f"ec2:{a}" for a in called}


def test_tagging_is_limited_to_network_interfaces() -> None:
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    (tagging,) = [s for s in policy["Statement"] if "ec2:CreateTags" in s["Action"]]
    assert tagging["Action"] == ["ec2:CreateTags"]
    assert tagging["Resource"] == "arn:aws:ec2:*:*:network-interface/*"


def test_runtime_lock_is_the_runtime_closure_of_the_dev_lock() -> None:
    deps = script("runtime_deps")
    assert (ROOT / "requirements-runtime.lock").read_text() == deps.runtime_lock_text(), (
        "regenerate: .venv/bin/python scripts/image/runtime_deps.py > requirements-runtime.lock"
    )


def test_runtime_lock_pins_agree_with_the_dev_lock_and_leave_dev_tools_out() -> None:
    deps = script("runtime_deps")
    runtime = deps.read_lock(ROOT / "requirements-runtime.lock")
    dev = deps.read_lock(ROOT / "requirements.lock")
    assert {n: dev.get(n) for n in runtime} == runtime
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "kubernetes-validate"):
        assert tool in dev and tool not in runtime


def _string_calls(path: Path, method: str) -> set[str]:
    """The string literal first arguments of every `<x>.<method>("...")` call in a module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == method
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return out


def branch_controller_actions() -> set[str]:
    """The branch controller's EC2 actions: BranchEc2's own calls, and the query client's methods it uses
    (`.client.<method>(...)` in the controller and BranchEc2), each through the action its method calls."""
    cloud, controllers = ROOT / "vpcnet" / "cloud", ROOT / "vpcnet" / "controllers"
    actions = _string_calls(cloud / "branch_ec2.py", "call")
    query = ast.parse((cloud / "ec2_query.py").read_text())
    methods = {f.name: f for f in ast.walk(query) if isinstance(f, ast.AsyncFunctionDef)}
    for path in (cloud / "branch_ec2.py", controllers / "branch_enis.py", controllers / "branch_cooldown.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "client"
                and node.attr in methods
                and node.attr != "call"
            ):
                for call in ast.walk(methods[node.attr]):
                    if (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "_call"
                        and isinstance(call.args[0], ast.Constant)
                    ):
                        actions.add(str(call.args[0].value))
    return actions


def test_branch_controller_policy_lists_exactly_the_actions_it_calls() -> None:
    policy = json.loads((DEPLOY / "iam-policy-branch-controller.json").read_text())
    granted = [a for s in policy["Statement"] for a in s["Action"]]
    assert len(granted) == len(set(granted)), "an action is granted twice"
    called = branch_controller_actions()
    assert {
        "AssociateTrunkInterface",
        "CreateTags",
        "DescribeSubnets",
    } <= called  # the scan sees all three ways
    assert set(granted) == {f"ec2:{a}" for a in called}
    (tagging,) = [s for s in policy["Statement"] if "ec2:CreateTags" in s["Action"]]
    assert tagging["Action"] == ["ec2:CreateTags"]
    assert tagging["Resource"] == "arn:aws:ec2:*:*:network-interface/*"
