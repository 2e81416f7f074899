"""Fuzzing the manifest loader and validation: random bytes, YAML-ish text and random documents shaped like
resources are either loaded or refused with ValidationError; nothing else ever escapes."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.api import ValidationError, known_kinds, load_documents

FRAGMENTS = [
    "apiVersion: v1\n", "kind: Pod\n", "kind: Namespace\n", "metadata:\n", "  name: a\n", "  namespace: x\n",
    "spec:\n", "  containers:\n", "  - name: c\n", "    ports: [{containerPort: 80, hostPort: -5}]\n",
    "---\n", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "<<: *a\n", "!!python/object:os.system\n",
    "!!binary ", "? ", "|\n", ">\n", "'", '"', "\\", "\t", "#", "%YAML 1.1\n", "...\n", " ", "\n",
    "999999999999999999999999999999", ".nan", ".inf", "~", "0x1F", "1e400", "2001-02-03",
    "é", "\x00", "\ufeff",
    "selector: ", "((((", "))))", "has(a)", " && ", " in {'a'}", "cidr: 10.0.0.0/33\n", "labels: {a: b}\n",
    "9" * 5000, "- " * 400, "[" * 400, "{a: " * 400,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.sampled_from(["", "a", "TCP", "Ingress", "Allow", "10.0.0.0/8", "all()", "a == 'b'", "80", "٣", "²"]),
    # numbers written as text, where validators convert: non-ASCII digits, ranges, too many digits
    st.from_regex(r"\A[0-9²٣:/.-]{1,12}\Z"),
    st.builds(lambda n, tail: "9" * n + tail, st.integers(1, 6000), st.sampled_from(["", ":1", "/8"])),
)
KEYS = [
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "spec", "status",
    "containers", "ports", "containerPort", "hostPort", "hostIP", "protocol", "podSelector", "matchLabels",
    "matchExpressions", "key", "operator", "values", "ingress", "egress", "from", "to", "ipBlock", "cidr",
    "except", "port", "endPort", "policyTypes", "selector", "namespaceSelector", "order", "types", "action",
    "source", "destination", "nets", "notNets", "icmp", "type", "code", "tier", "blockSize", "ipipMode",
    "vxlanMode", "nodeSelector", "podIP", "podIPs", "ip", "nodeName", "hostNetwork", "items",
]  # fmt: skip

values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), inner, max_size=5),
    ),
    max_leaves=30,
)


@st.composite
def resource_like(draw: st.DrawFn) -> dict[str, Any]:
    """A document with a real apiVersion/kind and random, resource-shaped contents."""
    api_version, kind = draw(st.sampled_from(sorted(known_kinds())))
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    doc["metadata"] = draw(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "default", "B!", ""]) | st.text(max_size=10)},
            optional={"namespace": st.sampled_from(["x", "default"]), "labels": values},
        )
    )
    doc.update(draw(st.dictionaries(st.sampled_from(["spec", "status", "extra"]), values, max_size=3)))
    return doc


def load_ok_or_validation_error(data: str | bytes) -> None:
    try:
        load_documents(data, "fuzz.yaml")
    except ValidationError as exc:
        assert str(exc)  # renders


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    load_ok_or_validation_error(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40))
def test_yaml_ish_text(parts: list[str]) -> None:
    text = "".join(parts)
    load_ok_or_validation_error(text)
    load_ok_or_validation_error(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["[", "{a: ", "{? ", "- ", "!!seq [", "&x ["]), min_size=1, max_size=6),
    st.integers(1, 5000),
)
def test_random_nesting(openers: list[str], depth: int) -> None:
    head = "".join(openers[i % len(openers)] for i in range(depth))
    load_ok_or_validation_error("apiVersion: v1\nkind: Namespace\nx: " + head + "1" + "]" * depth)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(resource_like(), min_size=1, max_size=4))
def test_random_resource_documents(docs: list[dict[str, Any]]) -> None:
    load_ok_or_validation_error(yaml.safe_dump_all(docs, allow_unicode=True))


TEMPLATES: list[dict[str, Any]] = list(
    yaml.safe_load_all(
        """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: x, labels: {app: a}}
spec:
  nodeName: n1
  containers: [{name: c, ports: [{containerPort: 80, name: http, protocol: TCP, hostPort: 8080}]}]
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}, matchExpressions: [{key: k, operator: In, values: [v]}]}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80, endPort: 90}]}]
  egress: [{to: [{namespaceSelector: {}}], ports: [{port: http, protocol: UDP}]}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  order: 10
  selector: app == 'a' && has(b)
  types: [Ingress, Egress]
  egress: [{action: Deny, protocol: ICMP, icmp: {type: 8, code: 0}}]
  ingress:
  - action: Allow
    protocol: TCP
    source: {nets: [10.0.0.0/8], selector: "c in {'d'}", namespaceSelector: global()}
    destination: {ports: [80, "8000:8080", http], notPorts: [22]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool}
spec: {cidr: 10.244.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Always, nodeSelector: all()}
"""
    )
)


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*here, i))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated_manifest(draw: st.DrawFn) -> dict[str, Any]:
    """A valid manifest with one to three of its values (leaf or subtree) replaced by random ones."""
    doc: Any = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        leaves = [p for p in paths if not isinstance(_at(doc, p), dict | list)]
        path = draw(st.sampled_from(leaves) | st.sampled_from(paths))  # mostly a scalar's place
        _at(doc, path[:-1])[path[-1]] = draw(scalars if path in leaves else values)
    return dict(doc)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_manifest(), min_size=1, max_size=3))
def test_mutated_valid_manifests(docs: list[dict[str, Any]]) -> None:
    load_ok_or_validation_error(yaml.safe_dump_all(docs, allow_unicode=True))
