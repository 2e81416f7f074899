"""Label and field selectors in the query-string syntax of the Kubernetes API.

Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists), `!a` (does not exist), joined by
commas (all must hold). Fields: `path=value`, `path==value`, `path!=value` over the paths a kind supports:
metadata.name and metadata.namespace for every kind, plus a few per kind (pods: spec.nodeName, status.phase).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vpcnet.lab.kubeapi.errors import ApiError, bad_request

_KEY = re.compile(r"^([a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")
_VALUE = re.compile(r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?)?$")

# Field paths a kind supports beyond metadata.name / metadata.namespace (what the real server indexes).
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName", "spec.hostNetwork"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
              "reason", "reportingComponent", "source", "type"),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
}  # fmt: skip


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" hold for objects without the label, as in the real server.
        return not present or labels[self.key] not in self.values


Selector = Callable[[dict[str, Any]], bool]


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _check_key(key: str, whole: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in selector "{whole}"')
    return key


def _check_value(value: str, whole: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f'unable to parse requirement: invalid label value "{value}" in selector "{whole}"')
    return value


_SET = re.compile(r"^(?P<key>[^\s(]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")


def parse_label_selector(text: str) -> list[Requirement]:
    """The requirements of a labelSelector; a bad one raises a 400 naming the part that is wrong."""
    if not text.strip():
        return []
    out = []
    for part in _split_top(text):
        if not part:
            raise bad_request(f'unable to parse requirement: empty term in selector "{text}"')
        set_match = _SET.match(part)
        if set_match:
            values = tuple(_check_value(v.strip(), text) for v in set_match["values"].split(","))
            out.append(Requirement(_check_key(set_match["key"], text), set_match["op"], values))
            continue
        for op, name in (("!=", "!="), ("==", "="), ("=", "=")):
            if op in part:
                key, value = part.split(op, 1)
                out.append(
                    Requirement(_check_key(key.strip(), text), name, (_check_value(value.strip(), text),))
                )
                break
        else:
            if part.startswith("!"):
                out.append(Requirement(_check_key(part[1:].strip(), text), "!exists"))
            else:
                out.append(Requirement(_check_key(part, text), "exists"))
    return out


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The text a field selector compares against: "" for a missing field, "true"/"false" for booleans."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if path == "source" and isinstance(node, Mapping):  # events: source is {component: ...}
        return str(node.get("component", ""))
    return str(node)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    negate: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) != self.negate


def parse_field_selector(text: str, kind: str) -> list[FieldRequirement]:
    """The requirements of a fieldSelector for `kind`; an unsupported path is a 400, as in the real server."""
    if not text.strip():
        return []
    allowed = ("metadata.name", "metadata.namespace", *EXTRA_FIELDS.get(kind, ()))
    out = []
    for part in _split_top(text):
        for op in ("!=", "==", "="):
            if op in part:
                path, value = part.split(op, 1)
                path = path.strip()
                if path not in allowed:
                    raise ApiError(
                        400,
                        "BadRequest",
                        f"field label not supported: {path}",
                    )
                out.append(FieldRequirement(path, value.strip(), op == "!="))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
    return out


def make_selector(label_text: str, field_text: str, kind: str) -> Selector | None:
    """One predicate over objects for both selectors; None when neither selects anything."""
    labels = parse_label_selector(label_text)
    fields = parse_field_selector(field_text, kind)
    if not labels and not fields:
        return None

    def select(obj: dict[str, Any]) -> bool:
        obj_labels = labels_of(obj)
        return all(r.matches(obj_labels) for r in labels) and all(f.matches(obj) for f in fields)

    return select
