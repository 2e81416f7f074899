"""JSON merge patch (RFC 7386) as the lab's Kubernetes API applies it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcnet.lab.kubeapi.patch import PatchError, apply_merge_patch


def canonical(value: Any) -> str:
    """Strict JSON identity (True is not 1)."""
    return json.dumps(value, sort_keys=True)


# RFC 7386 Appendix A, the rows whose original is an object (the API only patches objects).
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386_EXAMPLES)
def test_rfc7386_appendix_a(original: dict[str, Any], patch: Any, expected: dict[str, Any]) -> None:
    assert canonical(apply_merge_patch(original, patch)) == canonical(expected)


def test_rfc7386_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert apply_merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_labels_removed_by_null_and_added() -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"team": "a", "env": "x"}},
    }
    result = apply_merge_patch(ns, {"metadata": {"labels": {"team": None, "tier": "web"}}})
    assert result["metadata"]["labels"] == {"env": "x", "tier": "web"}


def test_lists_are_replaced_whole_even_merge_lists() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    result = apply_merge_patch(pod, {"spec": {"containers": [{"name": "a", "image": "z"}]}})
    assert result["spec"]["containers"] == [{"name": "a", "image": "z"}]


def test_inputs_untouched_and_result_shares_nothing() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [{"x": 1}]}}
    patch = {"spec": {"new": {"deep": [1, 2]}}, "metadata": {"labels": {"a": None}}}
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    result = apply_merge_patch(doc, patch)
    assert doc == doc_before and patch == patch_before
    result["spec"]["list"][0]["x"] = 99
    result["spec"]["new"]["deep"].append(3)
    assert doc == doc_before and patch == patch_before


@pytest.mark.parametrize("patch", [[1], "x", 3, None])
def test_non_object_patch_is_refused(patch: Any) -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        apply_merge_patch({"a": 1}, patch)


def test_non_json_value_named_by_pointer() -> None:
    with pytest.raises(PatchError, match="'/spec/when'"):
        apply_merge_patch({}, {"spec": {"when": {1, 2}}})


def test_document_must_be_an_object() -> None:
    with pytest.raises(PatchError, match="document"):
        apply_merge_patch([], {})  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

SCALARS = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text())
KEYS = st.text(min_size=1, max_size=5)
NO_NULLS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=15,
)
OBJECTS = st.dictionaries(KEYS, NO_NULLS, max_size=5)


def merge_diff(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch turning `source` into `target` (written for the test, not by the module)."""
    patch: dict[str, Any] = {key: None for key in source if key not in target}
    for key, value in target.items():
        if key in source and canonical(source[key]) == canonical(value):
            continue
        if isinstance(value, dict) and isinstance(source.get(key), dict):
            patch[key] = merge_diff(source[key], value)
        else:
            patch[key] = value
    return patch


@settings(max_examples=200, deadline=None)
@given(OBJECTS, OBJECTS)
def test_merge_patch_of_the_diff_recreates_the_target(source: dict[str, Any], target: dict[str, Any]) -> None:
    assert canonical(apply_merge_patch(source, merge_diff(source, target))) == canonical(target)


@settings(max_examples=100, deadline=None)
@given(OBJECTS, OBJECTS)
def test_merge_patch_is_idempotent_and_leaves_inputs(source: dict[str, Any], patch: dict[str, Any]) -> None:
    before = canonical((source, patch))
    once = apply_merge_patch(source, patch)
    assert canonical(apply_merge_patch(once, patch)) == canonical(once)
    assert canonical((source, patch)) == before
