"""Where the lab kubelet reads Pods and writes what it did: the lab's Kubernetes API (ApiPods, the lab's
one source of truth), or a bare etcd ResourceStore (StorePods: the kubelet's runtime tests, without an API).

`update(namespace, name, mutate)` is a read-modify-write under optimistic concurrency, retried on conflicts;
it answers the object as stored afterwards (None when the pod is gone)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

Obj = dict[str, Any]
Mutate = Callable[[Obj], Obj]
_ATTEMPTS = 20


class PodSource(Protocol):
    async def list(self) -> list[Obj]: ...

    async def update(self, namespace: str, name: str, mutate: Mutate) -> Obj | None: ...


def _strip(body: Mapping[str, Any], *drop: str) -> Obj:
    out: Obj = json.loads(json.dumps(body))
    out.get("metadata", {}).pop("resourceVersion", None)
    for key in drop:
        out.pop(key, None)
    return out


class ApiPods:
    """Pods through the API (a vpcnet.datastore.kube.KubeResourceStore): spec and metadata by replace,
    status by the status subresource, each a compare-and-swap on the read resourceVersion."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def list(self) -> list[Obj]:
        items, _ = await self.store.list("pod")
        return [dict(item.body) for item in items]

    async def update(self, namespace: str, name: str, mutate: Mutate) -> Obj | None:
        from vpcnet.datastore.resources import ResourceRef

        ref = ResourceRef("pod", namespace, name)
        for _ in range(_ATTEMPTS):
            current = await self.store.get(ref)
            if current is None:
                return None
            body, revision = dict(current.body), current.revision
            wanted = mutate(copy.deepcopy(body))
            if _strip(wanted, "status") != _strip(body, "status"):
                replaced = await self.store.replace(wanted, revision)
                if replaced is None:
                    continue  # changed meanwhile (or gone): read again
                body, revision = dict(replaced.body), replaced.revision
            if wanted.get("status") != body.get("status"):
                document = {**copy.deepcopy(body), "status": wanted.get("status", {})}
                replaced = await self.store.replace_status(document, revision)
                if replaced is None:
                    continue
                body = dict(replaced.body)
            return body
        raise RuntimeError(f"pod {namespace}/{name}: kept changing while the kubelet wrote to it")


class StorePods:
    """Pods in a vpcnet ResourceStore (etcd), written under compare-and-swap on the key's revision."""

    def __init__(self, store: Any) -> None:
        self.store = store  # vpcnet.datastore.resources.ResourceStore

    async def list(self) -> list[Obj]:
        items, _ = await self.store.list("pod")
        return [dict(item.body) for item in items]

    async def update(self, namespace: str, name: str, mutate: Mutate) -> Obj | None:
        from vpcnet.datastore.resources import ResourceRef
        from vpcnet.datastore.types import PutOp, RevisionIs

        ref = ResourceRef("pod", namespace, name)
        for _ in range(_ATTEMPTS):
            stored = await self.store.get(ref)
            if stored is None:
                return None
            body = mutate(copy.deepcopy(dict(stored.body)))
            encoded = json.dumps(_strip(body), sort_keys=True, separators=(",", ":")).encode()
            if _strip(body) == _strip(stored.body):
                return body
            committed = await self.store.datastore.commit(
                [RevisionIs(ref.key, stored.revision)], [PutOp(ref.key, encoded)]
            )
            if committed is not None:
                return body
        raise RuntimeError(f"pod {namespace}/{name}: kept changing while the kubelet wrote its status")
