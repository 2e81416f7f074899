"""Configuration you can see: below the commands (cli) and the lab, the process environment is read only by
the modules whose job that is, so every setting a component obeys is in one place and shown by the agent."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vpcnet"
# The user-facing commands and the lab equipment take flags and environment of their own.
OUTSIDE = ("cli", "lab", "testing")
READERS = {
    "agent/config.py": "every setting of the node agent",
    "datastore/settings.py": "the datastore's endpoints and credentials (agent, CLI and controllers)",
    "datastore/kube_settings.py": "the Kubernetes datastore's in-cluster or kubeconfig settings",
    "datastore/kube_connect.py": "the in-cluster API address (KUBERNETES_SERVICE_HOST/_PORT)",
    "cni/shim.py": "the CNI_* variables of a CNI call",
    "cni/nativeclient.py": "install-cni's prebuilt client, when one is named",
}


def _is_environment_access(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv", "environb", "getenvb")
        and isinstance(node.value, ast.Name)
        and node.value.id in ("os", "posix")
    )


def _imports_environment(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.ImportFrom)
        and node.module in ("os", "posix")
        and any(alias.name in ("environ", "getenv") for alias in node.names)
    )


def _reads_environment(tree: ast.Module) -> list[int]:
    return [
        getattr(node, "lineno", 0)
        for node in ast.walk(tree)
        if _is_environment_access(node) or _imports_environment(node)
    ]


def test_only_the_configuration_modules_read_the_environment() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.split("/")[0] in OUTSIDE or relative in READERS:
            continue
        for line in _reads_environment(ast.parse(path.read_text(), str(path))):
            found.append(f"vpcnet/{relative}:{line}")
    assert not found, "environment read outside the configuration modules:\n" + "\n".join(found)


def test_the_readers_named_here_exist() -> None:
    missing = [name for name in READERS if not (PACKAGE / name).is_file()]
    assert not missing, f"named readers that no longer exist: {missing}"
