"""Objects in etcd, stored the way kube-apiserver stores them: JSON under `<root>/<resource>/[<ns>/]<name>`,
with resourceVersion not stored but read back as the key's mod revision (so a list's version is the store
revision, and a watch from it misses nothing)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.types import KeyValue, WatchEvent
from vpcnet.lab.kubeapi.resources import ResourceType

DEFAULT_ROOT = "/registry"


def encode(obj: dict[str, Any]) -> bytes:
    stored = dict(obj)
    stored["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return json.dumps(stored, separators=(",", ":"), sort_keys=True).encode()


def decode(value: bytes, revision: int) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def decode_kv(kv: KeyValue) -> dict[str, Any]:
    return decode(kv.value, kv.mod_revision)


class ObjectStore:
    """Typed reads and writes of API objects over one EtcdDatastore, below one root prefix."""

    def __init__(self, datastore: EtcdDatastore, root: str = DEFAULT_ROOT) -> None:
        self.datastore = datastore
        self.root = root.rstrip("/")

    def prefix(self, rt: ResourceType, namespace: str | None = None) -> str:
        base = f"{self.root}/{rt.storage}/"
        return f"{base}{namespace}/" if rt.namespaced and namespace else base

    def key(self, rt: ResourceType, namespace: str | None, name: str) -> str:
        return f"{self.prefix(rt, namespace)}{name}"

    def key_of(self, rt: ResourceType, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        return self.key(rt, meta.get("namespace") if rt.namespaced else None, meta["name"])

    def with_version(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Objects are stored at one version and served at the one asked for (CRDs: no conversion)."""
        obj["apiVersion"] = rt.api_version
        return obj

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        kv = await self.datastore.get(self.key(rt, namespace, name))
        return self.with_version(rt, decode_kv(kv)) if kv else None

    async def get_at(self, key: str, revision: int) -> dict[str, Any] | None:
        kv = await self.datastore.get_at(key, revision)
        return decode_kv(kv) if kv else None

    async def list(self, rt: ResourceType, namespace: str | None) -> tuple[list[dict[str, Any]], int]:
        listing = await self.datastore.list(self.prefix(rt, namespace))
        return [self.with_version(rt, decode_kv(kv)) for kv in listing.items], listing.revision

    async def create(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The stored object with its resourceVersion; None when the key exists."""
        revision = await self.datastore.create(self.key_of(rt, obj), encode(obj))
        if revision is None:
            return None
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    async def update(self, rt: ResourceType, obj: dict[str, Any], expect: int) -> dict[str, Any] | None:
        """Replace only if the stored version is still `expect`; None when it changed meanwhile."""
        revision = await self.datastore.compare_and_swap(self.key_of(rt, obj), encode(obj), expect)
        if revision is None:
            return None
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    async def delete(self, rt: ResourceType, obj: dict[str, Any]) -> int | None:
        """Delete at the object's version; the delete's revision, or None when it changed meanwhile."""
        key = self.key_of(rt, obj)
        expect = int(obj["metadata"]["resourceVersion"])
        from vpcnet.datastore.types import DeleteOp, RevisionIs

        return await self.datastore.commit([RevisionIs(key, expect)], [DeleteOp(key)])

    async def delete_prefix(self, prefix: str) -> None:
        """Drop everything under prefix (a namespace's or a CRD's objects go with it)."""
        from vpcnet.datastore.types import DeleteOp

        listing = await self.datastore.list(prefix)
        if listing.items:
            await self.datastore.commit([], [DeleteOp(kv.key) for kv in listing.items])

    def watch(
        self, rt: ResourceType, namespace: str | None, start: int, progress: Callable[[int], None]
    ) -> AsyncIterator[WatchEvent]:
        return self.datastore.watch(self.prefix(rt, namespace), start, progress)

    async def revision(self) -> int:
        return await self.datastore.current_revision()
