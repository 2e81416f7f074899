"""Request bodies the lab's Kubernetes API decodes: anything undecodable is a 400, never a crash."""

from __future__ import annotations

import pytest

from vpcnet.lab.kubeapi.bodies import apply_patch, load_object
from vpcnet.lab.kubeapi.errors import ApiError
from vpcnet.lab.kubeapi.resources import BUILTIN

NETPOL = next(rt for rt in BUILTIN if rt.kind == "NetworkPolicy")


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"- " * 3000, "application/yaml"),
        (b"[" * 100000, "application/json"),
        (b"{a: [}", "application/yaml"),
    ],
)
def test_undecodable_or_deeply_nested_bodies_are_400(body: bytes, ctype: str) -> None:
    # found by the fault suite's manifest fuzz: YAML nested thousands deep answered 500 (RecursionError)
    with pytest.raises(ApiError) as err:
        load_object(body, ctype)
    assert err.value.code == 400


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b'{"kind": "Pod", "spec": {"priority": NaN}}', "application/json"),
        (b'{"spec": [Infinity]}', "application/json"),
        (b"spec: {priority: .inf}", "application/yaml"),
        (b"spec: [[.nan]]", "application/yaml"),
        (b'{"spec": {"priority": 1e400}}', "application/json"),
        (b"spec: {priority: 1.0e+400}", "application/yaml"),
    ],
)
def test_non_finite_numbers_are_400_as_the_real_server_answers(body: bytes, ctype: str) -> None:
    # the admission fuzz found them: stored, they made every later GET of the object invalid JSON
    with pytest.raises(ApiError) as err:
        load_object(body, ctype)
    assert err.value.code == 400 and "JSON number" in err.value.message


def test_a_patch_that_is_deeply_nested_or_non_finite_is_400() -> None:
    for body in (b"[" * 100000, b'{"spec": {"a": -Infinity}}', b'{"spec": {"a": -1e999}}'):
        with pytest.raises(ApiError) as err:
            apply_patch(NETPOL, {"metadata": {"name": "a"}}, body, "application/merge-patch+json")
        assert err.value.code == 400
