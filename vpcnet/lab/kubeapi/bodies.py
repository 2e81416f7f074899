"""Request bodies in, response bodies out: JSON (or YAML) objects, and patches by their content type."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from vpcnet.lab.kubeapi.errors import bad_request, unsupported_media_type
from vpcnet.lab.kubeapi.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from vpcnet.lab.kubeapi.resources import ResourceType

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Python's decoder would make it inf
        raise ValueError(f"{text[:40]} is out of range for a JSON number")
    return value


def _loads(body: bytes) -> Any:
    """JSON as the real server reads it: NaN, Infinity and numbers out of a float's range (which Python's
    decoder takes) are refused, or a stored object could no longer be served as JSON."""
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)


def _finite(doc: Any) -> Any:
    """doc, if it holds no YAML `.nan` or `.inf` (ValueError otherwise, as for JSON)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{node} is not a JSON number")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return doc


def load_object(body: bytes, content_type: str) -> Any:
    """A create or replace body (JSON, or YAML as the real server also takes)."""
    kind = media_type(content_type) or JSON
    try:
        if kind == JSON:
            return _loads(body)
        if kind in ("application/yaml", "application/x-yaml", "text/yaml"):
            return _finite(yaml.safe_load(body))
    except (ValueError, yaml.YAMLError, RecursionError) as err:  # RecursionError: nested thousands deep
        raise bad_request(f"the body of the request could not be decoded as {kind}: {err}") from None
    raise unsupported_media_type(
        f"the body of the request was in an unknown format - accepted media types include: {JSON}, "
        f'application/yaml (the lab does not serve protobuf; got "{kind}")'
    )


def apply_patch(rt: ResourceType, current: dict[str, Any], body: bytes, content_type: str) -> Any:
    """The object after the patch; 415 for patch types this kind does not take, 400 for a bad patch."""
    kind = media_type(content_type)
    if kind == APPLY_PATCH:
        raise unsupported_media_type(
            "server-side apply (application/apply-patch+yaml) is not served by the lab's API: "
            "use client-side `kubectl apply` (without --server-side)"
        )
    if kind not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH):
        raise unsupported_media_type(
            f"the body of the request was in an unknown format - accepted media types include: "
            f'{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}, {APPLY_PATCH} (got "{kind}")'
        )
    if kind == STRATEGIC_PATCH and not rt.builtin:
        raise unsupported_media_type(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
        )
    try:
        patch = _loads(body)
    except (ValueError, RecursionError) as err:
        raise bad_request(f"the patch could not be decoded as JSON: {err}") from None
    try:
        if kind == MERGE_PATCH:
            return apply_merge_patch(current, patch)
        if kind == JSON_PATCH:
            return apply_json_patch(current, patch)
        return apply_strategic_merge_patch(current, patch, f"{rt.api_version}/{rt.kind}")
    except PatchError as err:
        raise bad_request(str(err)) from None
