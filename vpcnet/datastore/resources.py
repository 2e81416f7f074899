"""Resources (Kubernetes and Calico kinds, IPPools, ...) stored as JSON documents in the datastore.

Key layout: /vpcnet/v1/<kind>/<namespace or _cluster>/<name>, where <kind> is the lower-case kind followed by
its API group when it has one ("pod", "networkpolicy.networking.k8s.io", "networkpolicy.projectcalico.org"),
so that Kubernetes and Calico kinds of the same name never collide. Validation belongs to vpcnet.api and
happens before anything reaches this store; the store checks only what it needs to build a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpcnet.datastore.types import (
    Datastore,
    DatastoreError,
    DeleteOp,
    EventType,
    KeyValue,
    PutOp,
    RevisionIs,
)

List = list  # the methods below named `list` shadow the builtin in annotations

ROOT = "/vpcnet/v1/"
CLUSTER_SCOPE = "_cluster"
# Names start and end alphanumeric, so no name can be the "_cluster" placeholder or contain a "/".
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$")
_APPLY_ATTEMPTS = 20


class ResourceError(ValueError):
    """A document cannot be stored; the message names the document and the field."""


def kind_path(api_version: str, kind: str) -> str:
    """The key segment for a kind: "pod", "networkpolicy.networking.k8s.io", "ippool.projectcalico.org"."""
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return kind.lower() + (f".{group}" if group else "")


@dataclass(frozen=True, order=True)
class ResourceRef:
    kind: str  # a kind_path()
    namespace: str | None  # None for cluster-scoped kinds
    name: str

    @property
    def key(self) -> str:
        return f"{ROOT}{self.kind}/{self.namespace or CLUSTER_SCOPE}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def parse_key(key: str) -> ResourceRef | None:
    """The reference a key stands for, or None when the key is not a resource key."""
    if not key.startswith(ROOT):
        return None
    parts = key[len(ROOT) :].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    kind, namespace, name = parts
    return ResourceRef(kind, None if namespace == CLUSTER_SCOPE else namespace, name)


def ref_of(document: Mapping[str, Any], where: str = "document") -> ResourceRef:
    """The reference of a document (apiVersion, kind, metadata.name, metadata.namespace)."""
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ResourceError(f"{where}: apiVersion: required (a string)")
    if not isinstance(kind, str) or not kind:
        raise ResourceError(f"{where}: kind: required (a string)")
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ResourceError(f"{where} ({kind}): metadata: required (a mapping)")
    name = metadata.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ResourceError(f"{where} ({kind}): metadata.name: {name!r} is not a valid name")
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _NAME.match(namespace)):
        raise ResourceError(f"{where} ({kind} {name}): metadata.namespace: {namespace!r} is not a valid name")
    return ResourceRef(kind_path(api_version, kind), namespace, name)


@dataclass(frozen=True)
class StoredResource:
    ref: ResourceRef
    body: dict[str, Any]  # the document; metadata.resourceVersion is the store revision of its last write
    revision: int
    # Why the stored value is not a document (undecodable bytes, not a JSON object); then body holds only
    # the metadata the key gives. Readers report and skip such a resource; they never stop on it.
    invalid: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    revision: int
    created: list[ResourceRef] = field(default_factory=list)
    configured: list[ResourceRef] = field(default_factory=list)
    unchanged: list[ResourceRef] = field(default_factory=list)


@dataclass(frozen=True)
class ResourceEvent:
    type: EventType
    ref: ResourceRef
    resource: StoredResource | None  # None on DELETE
    revision: int


def _encode(document: Mapping[str, Any]) -> bytes:
    body = json.loads(json.dumps(document))  # a deep copy that is plain JSON (and fails early if not JSON)
    metadata = body.get("metadata", {})
    metadata.pop("resourceVersion", None)  # the store revision is the version; never stored twice
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _checked(document: Mapping[str, Any]) -> tuple[ResourceRef, bytes]:
    ref = ref_of(document)
    try:
        return ref, _encode(document)
    except (TypeError, ValueError) as err:
        raise ResourceError(f"{ref}: not plain JSON data: {err}") from None


def _decode(ref: ResourceRef, kv: KeyValue) -> StoredResource:
    """The resource stored at ref. A value that is not a JSON object (written around us: etcdctl, an old
    version) is returned marked invalid rather than raised, so one bad key cannot stop a list, a snapshot
    or a watch of every other resource."""
    try:
        body = json.loads(kv.value)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return _invalid(ref, kv, f"the stored value is not JSON ({err})")
    if not isinstance(body, dict):
        return _invalid(ref, kv, f"the stored value is a JSON {type(body).__name__}, not an object")
    metadata = body.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        return _invalid(ref, kv, f"metadata is a JSON {type(metadata).__name__}, not an object")
    metadata["resourceVersion"] = str(kv.mod_revision)
    return StoredResource(ref=ref, body=body, revision=kv.mod_revision)


def _invalid(ref: ResourceRef, kv: KeyValue, why: str) -> StoredResource:
    metadata: dict[str, Any] = {"name": ref.name, "resourceVersion": str(kv.mod_revision)}
    if ref.namespace is not None:
        metadata["namespace"] = ref.namespace
    return StoredResource(ref=ref, body={"metadata": metadata}, revision=kv.mod_revision, invalid=why)


class ResourceStore:
    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore

    async def apply(self, documents: Sequence[Mapping[str, Any]]) -> ApplyResult:
        """Create or replace every document in one transaction: all of them are stored, or none.

        The transaction is conditional on what was read, so the created/configured/unchanged report is
        exact even with concurrent writers (on a conflict we read again and retry)."""
        refs = [ref_of(doc, f"document {i + 1}") for i, doc in enumerate(documents)]
        seen: dict[ResourceRef, int] = {}
        for i, ref in enumerate(refs):
            if ref in seen:
                raise ResourceError(
                    f"document {i + 1}: {ref} appears twice in one apply (first as {seen[ref] + 1})"
                )
            seen[ref] = i
        try:
            encoded = [_encode(doc) for doc in documents]
        except (TypeError, ValueError) as err:
            raise ResourceError(f"a document is not plain JSON data: {err}") from None
        for _ in range(_APPLY_ATTEMPTS):
            current = [await self.datastore.get(ref.key) for ref in refs]
            result = ApplyResult(revision=0)
            conditions, writes = [], []
            for ref, value, kv in zip(refs, encoded, current, strict=True):
                conditions.append(RevisionIs(ref.key, kv.mod_revision if kv else 0))
                if kv is None:
                    result.created.append(ref)
                elif kv.value == value:
                    result.unchanged.append(ref)
                    continue
                else:
                    result.configured.append(ref)
                writes.append(PutOp(ref.key, value))
            if not writes:
                return ApplyResult(await self.datastore.current_revision(), unchanged=result.unchanged)
            try:
                revision = await self.datastore.commit(conditions, writes)
            except DatastoreError as err:
                if "too many operations" in str(err):
                    raise ResourceError(
                        f"apply: {len(refs)} documents exceed what etcd takes in one transaction "
                        "(its --max-txn-ops, 128 by default); nothing was stored"
                    ) from None
                raise
            if revision is not None:
                return ApplyResult(revision, result.created, result.configured, result.unchanged)
        raise ResourceError(f"apply: the resources kept changing under us ({_APPLY_ATTEMPTS} attempts)")

    async def get(self, ref: ResourceRef) -> StoredResource | None:
        kv = await self.datastore.get(ref.key)
        return _decode(ref, kv) if kv else None

    async def list(self, kind: str, namespace: str | None = None) -> tuple[List[StoredResource], int]:
        """Every resource of kind (in namespace, when given), and the revision they were read at."""
        prefix = f"{ROOT}{kind}/" + (f"{namespace}/" if namespace else "")
        listing = await self.datastore.list(prefix)
        items = []
        for kv in listing.items:
            ref = parse_key(kv.key)
            if ref is not None:
                items.append(_decode(ref, kv))
        return items, listing.revision

    async def snapshot(self, kinds: Collection[str]) -> tuple[List[StoredResource], int]:
        """Every resource of the given kinds, all read at one revision (watch from revision + 1)."""
        listing = await self.datastore.list(ROOT)
        items = []
        for kv in listing.items:
            ref = parse_key(kv.key)
            if ref is not None and ref.kind in kinds:
                items.append(_decode(ref, kv))
        return items, listing.revision

    async def delete(self, refs: Sequence[ResourceRef]) -> List[ResourceRef]:
        """Delete the resources that exist, in one transaction; the ones that were deleted."""
        for _ in range(_APPLY_ATTEMPTS):
            current = [(ref, await self.datastore.get(ref.key)) for ref in refs]
            present = [(ref, kv) for ref, kv in current if kv is not None]
            if not present:
                return []
            conditions = [RevisionIs(ref.key, kv.mod_revision) for ref, kv in present]
            writes = [DeleteOp(ref.key) for ref, _ in present]
            if await self.datastore.commit(conditions, writes) is not None:
                return [ref for ref, _ in present]
        raise ResourceError(f"delete: the resources kept changing under us ({_APPLY_ATTEMPTS} attempts)")

    async def create(self, document: Mapping[str, Any]) -> StoredResource | None:
        """Store a new resource; None when one of that name exists."""
        ref, value = _checked(document)
        revision = await self.datastore.create(ref.key, value)
        return None if revision is None else _decode(ref, KeyValue(ref.key, value, revision, revision, 1))

    async def replace(self, document: Mapping[str, Any], expected_revision: int) -> StoredResource | None:
        """Overwrite a resource still at expected_revision; None when it changed or is gone."""
        ref, value = _checked(document)
        if expected_revision <= 0:  # 0 would mean "absent" to etcd: that is create's job
            return None
        revision = await self.datastore.compare_and_swap(ref.key, value, expected_revision)
        return None if revision is None else _decode(ref, KeyValue(ref.key, value, 0, revision, 0))

    async def delete_at(self, ref: ResourceRef, expected_revision: int) -> bool:
        """Delete a resource still at expected_revision; False when it changed or is gone."""
        return expected_revision > 0 and await self.datastore.delete(ref.key, expected_revision)

    async def watch(
        self, kinds: Collection[str], start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[ResourceEvent]:
        """Changes to resources of the given kinds from start_revision on, in store order across kinds;
        progress as in Datastore.watch."""
        async for event in self.datastore.watch(ROOT, start_revision, progress):
            ref = parse_key(event.key)
            if ref is None or ref.kind not in kinds:
                continue
            if event.type is EventType.DELETE or event.value is None:
                yield ResourceEvent(EventType.DELETE, ref, None, event.revision)
            else:
                kv = KeyValue(event.key, event.value, event.create_revision, event.revision, 0)
                yield ResourceEvent(EventType.PUT, ref, _decode(ref, kv), event.revision)
