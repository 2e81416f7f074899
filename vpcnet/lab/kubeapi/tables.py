"""Server-side printing: the `meta.k8s.io/v1` Table that kubectl (1.20+) asks for with
`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns follow kube-apiserver's printers for the
kinds the lab serves (pods, nodes, namespaces, network policies), a CRD's additionalPrinterColumns for
custom resources, and NAME/AGE for the rest. Columns of priority 1 are what `-o wide` adds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from vpcnet.lab.kubeapi.resources import ResourceType

Obj = dict[str, Any]
TABLE_MEDIA = "as=Table"


def wants_table(accept: str) -> bool:
    """The client takes a Table (kubectl's get); the first acceptable type decides, as in the server."""
    first = accept.split(",")[0]
    return TABLE_MEDIA in first.replace(" ", "") and "g=meta.k8s.io" in first


def human_age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's short durations: 45s, 7m, 3h, 5d (with a second unit under some bounds, like 2m30s)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"


def _age(obj: Obj) -> str:
    return human_age(obj.get("metadata", {}).get("creationTimestamp"))


def _none(value: Any) -> Any:
    return "<none>" if value in (None, "", []) else value


Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell


def _pod_ready(obj: Obj) -> str:
    containers = obj.get("spec", {}).get("containers", [])
    statuses = obj.get("status", {}).get("containerStatuses")
    if statuses:
        ready = sum(1 for s in statuses if s.get("ready"))
    else:
        conditions = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions", [])}
        ready = len(containers) if conditions.get("ContainersReady") == "True" else 0
    return f"{ready}/{len(containers)}"


def _pod_status(obj: Obj) -> str:
    status = obj.get("status", {})
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    return str(status.get("reason") or status.get("phase") or "Pending")


def _node_status(obj: Obj) -> str:
    conditions = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions", [])}
    state = "Ready" if conditions.get("Ready") == "True" else "NotReady"
    return state + (",SchedulingDisabled" if obj.get("spec", {}).get("unschedulable") else "")


def _node_roles(obj: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(
        k[len(prefix) :] for k in obj.get("metadata", {}).get("labels", {}) if k.startswith(prefix)
    )
    return ",".join(roles) or "<none>"


def _address(kind: str) -> Callable[[Obj], Any]:
    def cell(obj: Obj) -> Any:
        for a in obj.get("status", {}).get("addresses", []):
            if a.get("type") == kind:
                return a.get("address")
        return "<none>"

    return cell


def _node_info(field: str) -> Callable[[Obj], Any]:
    return lambda obj: _none(obj.get("status", {}).get("nodeInfo", {}).get(field))


def _selector_text(selector: Obj | None) -> str:
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        op = str(expr.get("operator", ""))
        parts.append(f"{expr.get('key')} {op.lower()} ({values})" if values else f"{op}{expr.get('key')}")
    return ",".join(parts) or "<none>"


_NAME: Column = ("Name", "string", 0, lambda o: o.get("metadata", {}).get("name", ""))
_AGE: Column = ("Age", "string", 0, _age)

_BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        _NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: "0"),
        _AGE,
        ("IP", "string", 1, lambda o: _none(o.get("status", {}).get("podIP"))),
        ("Node", "string", 1, lambda o: _none(o.get("spec", {}).get("nodeName"))),
        ("Nominated Node", "string", 1, lambda o: _none(o.get("status", {}).get("nominatedNodeName"))),
        ("Readiness Gates", "string", 1, lambda o: "<none>"),
    ],
    "Node": [
        _NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        _AGE,
        ("Version", "string", 0, _node_info("kubeletVersion")),
        ("Internal-IP", "string", 1, _address("InternalIP")),
        ("External-IP", "string", 1, _address("ExternalIP")),
        ("OS-Image", "string", 1, _node_info("osImage")),
        ("Kernel-Version", "string", 1, _node_info("kernelVersion")),
        ("Container-Runtime", "string", 1, _node_info("containerRuntimeVersion")),
    ],
    "Namespace": [_NAME, ("Status", "string", 0, lambda o: o.get("status", {}).get("phase", "Active")), _AGE],
    "NetworkPolicy": [
        _NAME,
        ("Pod-Selector", "string", 0, lambda o: _selector_text(o.get("spec", {}).get("podSelector"))),
        _AGE,
    ],
}


def _json_path(path: str) -> Callable[[Obj], Any]:
    """The simple JSONPaths of additionalPrinterColumns (.spec.a.b, .status.x[0].y)."""
    steps: list[str | int] = []
    for part in path.strip().lstrip(".").split("."):
        name, _, index = part.partition("[")
        if name:
            steps.append(name)
        if index.rstrip("]").isdigit():
            steps.append(int(index.rstrip("]")))

    def cell(obj: Obj) -> Any:
        value: Any = obj
        for step in steps:
            if isinstance(step, int):
                value = value[step] if isinstance(value, list) and len(value) > step else None
            else:
                value = value.get(step) if isinstance(value, dict) else None
            if value is None:
                return "<none>"
        if isinstance(value, (dict, list)):
            import json

            return json.dumps(value, separators=(",", ":"))
        return value

    return cell


def columns(rt: ResourceType) -> list[Column]:
    if rt.builtin and rt.kind in _BUILTIN_COLUMNS:
        return _BUILTIN_COLUMNS[rt.kind]
    custom = rt.printer_columns
    if not rt.builtin and custom:
        out: list[Column] = [_NAME]
        for c in custom:
            if c.get("type") == "date":
                out.append((str(c["name"]), "string", int(c.get("priority", 0)), _age_at(str(c["jsonPath"]))))
            else:
                cell = _json_path(str(c["jsonPath"]))
                out.append((str(c["name"]), str(c.get("type", "string")), int(c.get("priority", 0)), cell))
        return out
    return [_NAME, _AGE]


def _age_at(path: str) -> Callable[[Obj], Any]:
    read = _json_path(path)
    return lambda obj: human_age(v if isinstance(v := read(obj), str) else None)


def _row(rt: ResourceType, cols: Sequence[Column], obj: Obj, include: str) -> Obj:
    if include == "Object":
        embedded: Obj = obj
    elif include == "None":
        embedded = {}
    else:
        embedded = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    row: Obj = {"cells": [cell(obj) for _, _, _, cell in cols]}
    if embedded:
        row["object"] = embedded
    return row


def table(rt: ResourceType, objs: Sequence[Obj], resource_version: str, include: str = "Metadata") -> Obj:
    """A Table of objs (a list answer, a get answer, or one watch event's object)."""
    cols = columns(rt)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": p,
            }
            for name, kind, p, _ in cols
        ],
        "rows": [_row(rt, cols, obj, include) for obj in objs],
    }
