"""The house's floors: imports point down the package order of the architecture note, never up, and no two
modules import each other at load time (a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vpcnet"
# Top floor first; a package may import only packages after it. `testing` is test and benchmark support.
ORDER = ("testing", "cli", "lab", "controllers", "agent", "cni", "dataplane", "ipam", "cloud", "datastore",
         "policy", "api")  # fmt: skip


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def test_imports_point_down_the_floors() -> None:
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = []
    for module, tree in _modules().items():
        floor = module.split(".")[1] if module.count(".") else ""
        if floor not in rank:
            continue
        for node in ast.walk(tree):
            for target in _imported(node):
                parts = target.split(".")
                if parts[0] == "vpcnet" and len(parts) > 1 and rank.get(parts[1], len(ORDER)) < rank[floor]:
                    upward.append(f"{module} imports {target}")
    assert not upward, "imports that run up a floor:\n" + "\n".join(sorted(set(upward)))


def test_no_import_cycles_at_load_time() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, tree in modules.items():
        # Only module-level imports run at load time (a function-local import is deliberate and lazy).
        edges = set()
        for node in tree.body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks do not run
                continue
            for target in _imported(node):
                if target in modules and target != module:
                    edges.add(target)
        graph[module] = edges

    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    # A package's __init__ importing its own submodules is not a cycle worth refusing.
    real = [c for c in cycles if not all(m.startswith(c[0]) or c[0].startswith(m) for m in c)]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)
