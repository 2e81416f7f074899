"""The manifest fuzz scenario's request paths (faults/manifest_fuzz.py): a fuzzed namespace or name goes
into the path as one percent-encoded segment. Unencoded, a non-ASCII namespace made http.client raise
UnicodeEncodeError, which ended a full `make faults` run's campaign without figures; a '/' picked another
path."""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "faults"))
from manifest_fuzz import object_targets

PODS = "/api/v1/pods"


def pod(namespace: str, name: str = "p") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}


@pytest.mark.parametrize(
    "namespace",
    [
        "\x9b6\u00ee\uef50\U000833b5",  # the run's case: C1 control, Latin-1, private use
        "a/b",
        "x?y#z",
        "\ud800",  # a lone surrogate: YAML's "\ud800" escape gives one
    ],
)
def test_a_fuzzed_namespace_is_one_ascii_segment(namespace: str) -> None:
    targets = object_targets(PODS, pod(namespace), b"{}")
    assert [method for method, *_ in targets] == ["POST", "PUT", "PATCH"]
    for _, path, _, _ in targets:
        path.encode("ascii")  # what http.client does with the request line
        parts = path.split("/")
        assert parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "pods", path
        assert urllib.parse.unquote(parts[4], errors="surrogatepass") == namespace


def test_a_name_is_encoded_and_one_with_a_slash_gets_no_object_path() -> None:
    targets = object_targets(PODS, pod("ns", "\u00e9t\u00e9"), b"{}")
    assert targets[1][1] == "/api/v1/namespaces/ns/pods/%C3%A9t%C3%A9"
    assert [method for method, *_ in object_targets(PODS, pod("ns", "a/b"), b"{}")] == ["POST"]


def test_a_cluster_scoped_collection_keeps_its_path() -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1", "namespace": "ignored"}}
    assert [path for _, path, _, _ in object_targets("/api/v1/namespaces", doc, b"{}")] == [
        "/api/v1/namespaces",
        "/api/v1/namespaces/n1",
        "/api/v1/namespaces/n1",
    ]
