"""Placeholder: replaced by the patch helper's branch (the pure patch engines live there)."""

from __future__ import annotations

from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied; the message says why."""


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    raise NotImplementedError


def apply_json_patch(doc: Any, ops: Any) -> Any:
    raise NotImplementedError


def apply_strategic_merge_patch(doc: Any, patch: Any, kind_key: str) -> Any:
    raise NotImplementedError
