"""Request paths of the resource API -> what they name (group, version, namespace, resource, name, sub)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_path: bool = False  # the deprecated /watch/ form of a watch


# Subresources of a namespace, which would otherwise read as `namespaces/<ns>/<resource>`.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def parse_resource_path(parts: list[str]) -> Target | None:
    """`parts` are the segments after /api or /apis; None when the path names no resource."""
    if parts[:1] == ["v1"]:
        group, version, rest = "", "v1", parts[1:]
    elif len(parts) >= 2 and parts[0] != "v1":
        group, version, rest = parts[0], parts[1], parts[2:]
    else:
        return None
    watch_path = rest[:1] == ["watch"]
    if watch_path:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3 or not all(rest):
        return None
    return Target(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
        watch_path=watch_path,
    )
