"""What every resource shares: metadata, identity (kind/namespace/name), the kind registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from vpcnet.api.fields import (
    Ctx,
    as_mapping,
    dns_label_problem,
    dns_subdomain_problem,
    join,
    labels_map,
    opt_str,
    string_map,
)


@dataclass(frozen=True, order=True)
class ResourceKey:
    """Identity of a stored object. `namespace` is None for cluster-scoped kinds."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass
class ObjectMeta:
    """metadata: name, namespace, labels, annotations; other metadata fields kept verbatim in `extra`."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.namespace is not None:
            out["namespace"] = self.namespace
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        return out

    @classmethod
    def parse(cls, ctx: Ctx, value: Any, *, namespaced: bool, name_rule: str = "subdomain") -> ObjectMeta:
        data = as_mapping(ctx, value, "metadata")
        name = opt_str(ctx, data, "name", "metadata")
        if not name:
            ctx.fault("metadata.name", "required")
            name = ""
        else:
            problem = dns_label_problem(name) if name_rule == "label" else dns_subdomain_problem(name)
            if problem:
                ctx.fault("metadata.name", problem)
        namespace = opt_str(ctx, data, "namespace", "metadata")
        if namespaced:
            if namespace is None:
                namespace = "default"  # as kubectl does for a document without a namespace
            elif problem := dns_label_problem(namespace):
                ctx.fault("metadata.namespace", problem)
        elif namespace is not None:
            ctx.fault("metadata.namespace", "must not be set: this kind is not namespaced")
            namespace = None
        labels = labels_map(ctx, data, "labels", "metadata")
        annotations = string_map(ctx, data, "annotations", "metadata")
        extra = {k: v for k, v in data.items() if k not in ("name", "namespace", "labels", "annotations")}
        return cls(name=name, namespace=namespace, labels=labels, annotations=annotations, extra=extra)


class Resource:
    """Base of every resource class.

    Subclasses are dataclasses with a `metadata` field and set API_VERSION, KIND and NAMESPACED.
    `parse(ctx, doc, metadata)` reads a whole document (faults go to ctx); `to_dict()` gives it
    back as stored, with defaults applied (so parse(to_dict(x)) == x).
    """

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    NAMESPACED: ClassVar[bool]
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("apiVersion", "kind", "metadata", "spec")
    NAME_RULE: ClassVar[str] = "subdomain"

    metadata: ObjectMeta

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.KIND, self.metadata.namespace, self.metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _header(self) -> dict[str, Any]:
        return {"apiVersion": self.API_VERSION, "kind": self.KIND, "metadata": self.metadata.to_dict()}


_KINDS: dict[tuple[str, str], type[Resource]] = {}


def register_kind(cls: type[Resource]) -> type[Resource]:
    """Add a resource class to the registry (apiVersion, kind) -> class; usable as a decorator."""
    _KINDS[(cls.API_VERSION, cls.KIND)] = cls
    return cls


def kind_class(api_version: str, kind: str) -> type[Resource] | None:
    return _KINDS.get((api_version, kind))


def known_kinds() -> list[tuple[str, str]]:
    return sorted(_KINDS)


def spec_of(ctx: Ctx, doc: dict[str, Any]) -> dict[str, Any]:
    return as_mapping(ctx, doc.get("spec"), "spec")


__all__ = ["ObjectMeta", "Resource", "ResourceKey", "join", "kind_class", "known_kinds", "register_kind"]
