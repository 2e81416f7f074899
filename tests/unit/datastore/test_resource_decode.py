"""A stored value that is not a document is returned marked invalid, never raised: one bad key must not
stop a list or a snapshot of every other resource (issue 14, defect 2)."""

from __future__ import annotations

import asyncio
import json

import pytest

from vpcnet.datastore.resources import ROOT, ResourceStore
from vpcnet.datastore.types import KeyValue, Listing

KNP = "networkpolicy.networking.k8s.io"


class ListOnly:
    """Just enough of a Datastore for list/snapshot/get."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    async def list(self, prefix: str) -> Listing:
        found = sorted((k, v) for k, v in self.values.items() if k.startswith(prefix))
        items = [KeyValue(key, value, 3, 7, 1) for key, value in found]
        return Listing(items, 9)

    async def get(self, key: str) -> KeyValue | None:
        value = self.values.get(key)
        return None if value is None else KeyValue(key, value, 3, 7, 1)


GOOD = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "good", "namespace": "ns1"},
    "spec": {"podSelector": {}},
}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json{", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"\xff\xfe", "not JSON"),
        (b'{"metadata": 5}', "metadata is a JSON int"),
    ],
)
def test_an_undecodable_value_is_listed_as_invalid_beside_the_good_ones(value: bytes, why: str) -> None:
    store = ResourceStore(
        ListOnly({f"{ROOT}{KNP}/ns1/good": json.dumps(GOOD).encode(), f"{ROOT}{KNP}/ns1/bad": value})
    )
    items, revision = asyncio.run(store.list(KNP))
    assert revision == 9
    by_name = {item.ref.name: item for item in items}
    assert by_name["good"].invalid is None and by_name["good"].body["spec"] == {"podSelector": {}}
    bad = by_name["bad"]
    assert bad.invalid is not None and why in bad.invalid
    assert bad.body == {"metadata": {"name": "bad", "namespace": "ns1", "resourceVersion": "7"}}
    snapshot, _ = asyncio.run(store.snapshot({KNP}))
    assert sorted(item.ref.name for item in snapshot) == ["bad", "good"]
    got = asyncio.run(store.get(bad.ref))
    assert got is not None and got.invalid == bad.invalid


def test_get_shows_an_undecodable_or_invalid_resource_as_invalid() -> None:
    from vpcnet.cli.resources import shown_body

    bad_selector = json.loads(json.dumps(GOOD))
    bad_selector["metadata"]["name"] = "sel"
    bad_selector["spec"]["podSelector"] = {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}
    store = ResourceStore(
        ListOnly(
            {
                f"{ROOT}{KNP}/ns1/good": json.dumps(GOOD).encode(),
                f"{ROOT}{KNP}/ns1/bad": b"not json{",
                f"{ROOT}{KNP}/ns1/sel": json.dumps(bad_selector).encode(),
            }
        )
    )
    items, _ = asyncio.run(store.list(KNP))
    shown = {item.ref.name: shown_body(item) for item in items}
    assert "invalid" not in shown["good"]
    assert "not JSON" in shown["bad"]["invalid"]
    assert "Bogus" in shown["sel"]["invalid"]
