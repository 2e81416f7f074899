"""Where the lab kubelet reads Pods and writes what it did: the lab's Kubernetes API (ApiPods, the lab's
one source of truth), or a bare etcd ResourceStore (StorePods: the kubelet's runtime tests, without an API).

`update(namespace, name, mutate)` is a read-modify-write under optimistic concurrency, retried on conflicts;
it answers the object as stored afterwards (None when the pod is gone)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from vpcnet.controllers.apiclient import ApiClient, ApiError
from vpcnet.controllers.kinds import POD

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
    """Pods through the API: spec and metadata by replace, status by the status subresource."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def list(self) -> list[Obj]:
        return list((await self.client.list(POD)).get("items", []))

    async def update(self, namespace: str, name: str, mutate: Mutate) -> Obj | None:
        for _ in range(_ATTEMPTS):
            current = await self.client.get(POD, namespace, name)
            if current is None:
                return None
            wanted = mutate(copy.deepcopy(current))
            try:
                if _strip(wanted, "status") != _strip(current, "status"):
                    body = {**wanted, "metadata": {**wanted["metadata"]}}
                    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    current = await self.client.replace(POD, body)
                if wanted.get("status") != current.get("status"):
                    body = copy.deepcopy(current)
                    body["status"] = wanted.get("status", {})
                    current = await self.client.replace(POD, body, sub="status")
            except ApiError as exc:
                if exc.code == 409:
                    continue  # changed meanwhile: read again
                if exc.code == 404:
                    return None
                raise
            return current
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
