"""JSON patch (RFC 6902) as the lab's Kubernetes API applies it: atomic; errors name operation and path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcnet.lab.kubeapi.patch import PatchError, apply_json_patch

# RFC 6902 Appendix A examples that succeed: (document, patch, result).
RFC6902_OK = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),  # A.1
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),  # A.2
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),  # A.3
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),  # A.4
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),  # A.5
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),  # A.6
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),  # A.7
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),  # A.8
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),  # A.10
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),  # A.11: unknown members are ignored
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),  # A.14
    ({"foo": "bar"}, [{"op": "copy", "from": "/foo", "path": "/baz"}], {"foo": "bar", "baz": "bar"}),
]


@pytest.mark.parametrize(("document", "patch", "expected"), RFC6902_OK)
def test_rfc6902_appendix_a(document: dict[str, Any], patch: list[Any], expected: dict[str, Any]) -> None:
    assert apply_json_patch(document, patch) == expected


# RFC 6902 Appendix A examples that must fail, plus the error a caller sees.
RFC6902_ERRORS = [
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "operation 0 .*test failed"),  # A.9
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "'/baz' does not exist"),  # A.12
    (
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        "test failed",
    ),  # A.15: "10" is not 10
    (
        {"foo": "bar"},
        [{"op": "remove", "path": "/nope"}],
        "operation 0 \\(remove '/nope'\\): '/nope' does not exist",
    ),
    ({"a": [1]}, [{"op": "add", "path": "/a/2", "value": 0}], "index 2 is out of range"),
    ({"a": [1]}, [{"op": "add", "path": "/a/01", "value": 0}], "'01' is not an array index"),
    ({"a": [1]}, [{"op": "replace", "path": "/a/-", "value": 0}], "'-' is not an array index"),
    ({"a": {}}, [{"op": "move", "from": "/a", "path": "/a/b"}], "into its own child"),
    ({"a": 1}, [{"op": "frob", "path": "/a"}], "unknown op"),
    ({"a": 1}, [{"op": "add", "path": "/b"}], "member 'value' is missing"),
    ({"a": 1}, [{"op": "copy", "path": "/b"}], "member 'from' is missing"),
    ({"a": 1}, [{"path": "/b"}], "member 'op' is missing"),
    ({"a": 1}, [{"op": "add", "path": "b", "value": 1}], "must be empty or start with '/'"),
    ({"a": 1}, [{"op": "add", "path": "/~2", "value": 1}], "not followed by 0 or 1"),
    ({"a": "s"}, [{"op": "add", "path": "/a/b", "value": 1}], "is a string"),
    ({"a": 1}, [{"op": "remove", "path": ""}], "cannot remove the whole document"),
    ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], "must stay a JSON object"),
    ({"a": 1}, {"op": "add"}, "must be a JSON array"),
    ({"a": 1}, ["add"], "operation 0: must be a JSON object"),
]


@pytest.mark.parametrize(("document", "patch", "message"), RFC6902_ERRORS)
def test_bad_operations_raise_naming_operation_and_path(
    document: dict[str, Any], patch: Any, message: str
) -> None:
    before = copy.deepcopy(document)
    with pytest.raises(PatchError, match=message):
        apply_json_patch(document, patch)
    assert document == before


def test_numbers_compare_by_value_booleans_do_not() -> None:
    apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}])
    with pytest.raises(PatchError, match="test failed"):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])
    apply_json_patch(
        {"a": {"x": [1, {"y": None}]}}, [{"op": "test", "path": "/a", "value": {"x": [1, {"y": None}]}}]
    )


def test_replace_the_whole_document_and_move_to_itself() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert apply_json_patch({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": 1}


def test_later_failure_undoes_earlier_operations() -> None:
    pod = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    before = copy.deepcopy(pod)
    ops = [
        {"op": "replace", "path": "/spec/containers/0/image", "value": "y"},
        {"op": "remove", "path": "/metadata/labels/app"},
        {"op": "test", "path": "/metadata/labels/app", "value": "web"},
    ]
    with pytest.raises(PatchError, match=r"operation 2 \(test '/metadata/labels/app'\)"):
        apply_json_patch(pod, ops)
    assert pod == before


def test_kubernetes_style_label_patch_with_escaped_key() -> None:
    node = {"metadata": {"name": "n1", "labels": {}}}
    ops = [{"op": "add", "path": "/metadata/labels/topology.kubernetes.io~1zone", "value": "us-west-2a"}]
    assert apply_json_patch(node, ops)["metadata"]["labels"] == {"topology.kubernetes.io/zone": "us-west-2a"}


def test_copy_does_not_alias() -> None:
    result = apply_json_patch({"a": {"b": [1]}}, [{"op": "copy", "from": "/a", "path": "/c"}])
    result["c"]["b"].append(2)
    assert result["a"] == {"b": [1]}


# ---------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
DOCS = st.dictionaries(st.text(max_size=3), JSON, max_size=4)


def pointers(value: Any, prefix: str = "") -> list[str]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += pointers(item, prefix + "/" + key.replace("~", "~0").replace("/", "~1"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += pointers(item, f"{prefix}/{index}")
    return found


@settings(max_examples=200, deadline=None)
@given(DOCS, JSON, st.data())
def test_failed_test_leaves_the_document_unchanged(
    doc: dict[str, Any], other: Any, data: st.DataObject
) -> None:
    """A change to the copy, then a `test` that usually fails: the caller's document never moves."""
    path = data.draw(st.sampled_from(pointers(doc)))
    before = json.dumps(doc, sort_keys=True)
    ops = [{"op": "add", "path": "/~0changed", "value": 1}, {"op": "test", "path": path, "value": other}]
    try:
        result = apply_json_patch(doc, ops)
    except PatchError as error:
        assert "operation 1 (test" in str(error)
    else:
        assert result["~changed"] == 1
    assert json.dumps(doc, sort_keys=True) == before


@settings(max_examples=200, deadline=None)
@given(DOCS, st.data())
def test_test_passes_on_every_existing_value(doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(pointers(doc)))
    value: Any = doc
    for token in path.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        value = value[int(token)] if isinstance(value, list) else value[token]
    assert apply_json_patch(doc, [{"op": "test", "path": path, "value": copy.deepcopy(value)}]) == doc
