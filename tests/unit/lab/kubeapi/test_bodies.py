"""Request bodies the lab's Kubernetes API decodes: anything undecodable is a 400, never a crash."""

from __future__ import annotations

import pytest

from vpcnet.lab.kubeapi.bodies import load_object
from vpcnet.lab.kubeapi.errors import ApiError


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
