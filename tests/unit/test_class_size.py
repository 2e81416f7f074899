"""The house rule "no class in vpcnet/ over 400 lines", checked over the source (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

import vpcnet

MAX_CLASS_LINES = 400


def test_no_class_in_vpcnet_is_over_400_lines() -> None:
    root = Path(vpcnet.__file__).parent
    too_long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_long.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    assert too_long == [], "classes over 400 lines: " + ", ".join(too_long)
