"""Whatever shape a body has, admission answers it with an API error (4xx) or stores it: never an exception
of its own (the lab server would turn that into a 500, which the fault suite's manifest fuzz counts).

Found this way: a Pod with `spec.containers: 5.3e16` reached the defaulter's loop over containers, and a
container whose name is an object reached a set of names."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_admission import CRD

from vpcnet.lab.kubeapi.admission import prepare_create, prepare_update
from vpcnet.lab.kubeapi.errors import ApiError
from vpcnet.lab.kubeapi.resources import BUILTIN, CRD_TYPE, ResourceType, crd_types

CUSTOM = crd_types(CRD)[0]
TYPES: list[ResourceType] = [*BUILTIN, CUSTOM]

# The field names the defaulters and validators look at, so that the generator reaches them often.
KEYS = st.sampled_from(
    [
        "spec", "status", "metadata", "containers", "name", "image", "generateName", "labels",
        "annotations", "versions", "names", "plural", "kind", "group", "scope", "schema",
        "openAPIV3Schema", "storage", "served", "subnet", "finalizers", "phase", "namespace",
    ]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def _valid(rt: ResourceType) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": "a"}}
    if rt.kind == "Pod":
        body["spec"] = {"containers": [{"name": "c", "image": "i"}]}
    elif rt is CRD_TYPE:
        body = copy.deepcopy(CRD)
    elif rt is CUSTOM:
        body["spec"] = {"subnet": "s"}
    return body


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a body, the body itself included."""
    found = [prefix]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found += _paths(value, (*prefix, key))
    return found


@st.composite
def bodies(draw: st.DrawFn) -> tuple[ResourceType, Any]:
    """A valid body of some type with one of its places, or a new key under one, replaced by junk."""
    rt = draw(st.sampled_from(TYPES))
    body = _valid(rt)
    path = draw(st.sampled_from(_paths(body)))
    if draw(st.booleans()):
        path = (*path, draw(KEYS))
    junk = draw(JSON)
    if not path:
        return rt, junk
    parent: Any = body
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) or isinstance(path[-1], int):
        parent[path[-1]] = junk
    return rt, body


def _admit(rt: ResourceType, body: Any) -> dict[str, Any] | None:
    namespace = "default" if rt.namespaced else None
    try:
        stored = prepare_create(rt, body, namespace)
    except ApiError as err:
        assert 400 <= err.code < 500, err.status()
        return None
    json.dumps(stored, allow_nan=False)  # what is stored can be served
    return stored


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_create_answers_any_body_with_an_api_error_or_stores_it(case: tuple[ResourceType, Any]) -> None:
    rt, body = case
    stored = _admit(rt, body)
    if rt is CRD_TYPE and stored is not None:  # the kinds an admitted CRD serves take bodies without crashing
        for served in crd_types(stored):
            _admit(served, {"metadata": {"name": "a"}, "spec": {"subnet": "s", "mode": "a"}})
            _admit(served, {"metadata": {"name": "a"}, "spec": {"subnet": 5, "securityGroups": [1]}})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.booleans())
def test_update_answers_any_body_with_an_api_error_or_stores_it(
    case: tuple[ResourceType, Any], status_only: bool
) -> None:
    rt, body = case
    old = _admit(rt, _valid(rt))
    assert old is not None
    old["metadata"]["resourceVersion"] = "7"
    try:
        new = prepare_update(rt, old, body, status_only=status_only)
    except ApiError as err:
        assert 400 <= err.code < 500, err.status()
        return
    json.dumps(new, allow_nan=False)


def test_a_pod_whose_containers_are_a_number_is_invalid() -> None:
    # the manifest fuzz's case, verbatim in shape: the defaulter iterated over a float
    pod = {"metadata": {"name": "p"}, "spec": {"containers": 5.289322163568652e16, "nodeName": "n1"}}
    try:
        prepare_create(BUILTIN[1], pod, "x")
    except ApiError as err:
        assert err.code == 422
    else:
        raise AssertionError("accepted")


def test_a_container_named_by_an_object_is_invalid() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": {"a": 1}, "image": "i"}]}}
    try:
        prepare_create(BUILTIN[1], pod, "x")
    except ApiError as err:
        assert err.code == 422
    else:
        raise AssertionError("accepted")


def test_a_crd_whose_schema_is_malformed_is_invalid_and_names_where() -> None:
    # admitted once, such a schema crashed the checks of every object of its kind (`properties: true`)
    crd = copy.deepcopy(CRD)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] = True
    crd["spec"]["versions"][0]["subresources"] = True
    try:
        prepare_create(CRD_TYPE, crd, None)
    except ApiError as err:
        assert err.code == 422
        fields = {cause["field"] for cause in err.status()["details"]["causes"]}
        assert "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties" in fields
        assert "spec.versions[0].subresources" in fields
    else:
        raise AssertionError("accepted")
