"""Reading manifest bytes into YAML documents, strictly: UTF-8 only, no duplicate keys, bounded nesting.

PyYAML's SafeLoader accepts a mapping that names a key twice (the last one silently wins, which hides typos
in manifests) and recurses once per nesting level (10,000 levels is a RecursionError, not an error message).
`StrictLoader` refuses both with a `yaml.MarkedYAMLError` that carries line and column.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from vpcnet.api.fields import quote

# Deeper than any real manifest (Kubernetes objects nest ~15 levels), far below Python's recursion limit.
MAX_DEPTH = 100


class ManifestDecodeError(ValueError):
    """The input is not UTF-8 text; `offset` is the byte offset of the first bad byte."""

    def __init__(self, offset: int, line: int, reason: str) -> None:
        self.offset = offset
        self.line = line
        super().__init__(f"not UTF-8 text: {reason} at byte offset {offset} (line {line})")


def decode_manifest(data: bytes | str) -> str:
    """Manifest bytes as text; raises ManifestDecodeError naming the first byte that is not UTF-8."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestDecodeError(exc.start, data.count(b"\n", 0, exc.start) + 1, exc.reason) from exc


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels is not accepted", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except ValueError as exc:  # a scalar Python refuses, e.g. an integer of more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {quote(str(exc))}", node.start_mark
            ) from exc

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it
                continue
            if first is not None:
                line, column = first.start_mark.line + 1, first.start_mark.column + 1
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {quote(key)} (first at line {line} column {column})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def documents_with_lines(text: str) -> list[tuple[int, Any]]:
    """Every YAML document with the line it starts on (1-based), so errors point into the file."""
    loader = StrictLoader(text)
    try:
        docs: list[tuple[int, Any]] = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node said there is one; never None in practice
                break
            docs.append((node.start_mark.line + 1, loader.construct_document(node)))
        return docs
    finally:
        loader.dispose()
