"""What a per-kind resource store offers its consumers (the policy agent, the pool IPAM, the CLI), whatever
holds the resources: etcd (vpcnet.datastore.resources.ResourceStore) or the Kubernetes API
(vpcnet.datastore.kube.KubeResourceStore).

Revisions are ints. Over etcd they are etcd revisions. Over the Kubernetes API they are resourceVersions
read as ints, which is what an etcd-backed API server hands out (resourceVersion = etcd mod revision), though
the API contract calls them opaque: the Kubernetes store refuses a server whose versions are not integers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from vpcnet.datastore.resources import ApplyResult, ResourceEvent, ResourceRef, StoredResource

List = list  # `list` is a method name below


class ResourceStoreLike(Protocol):
    async def get(self, ref: ResourceRef) -> StoredResource | None: ...

    async def list(self, kind: str, namespace: str | None = None) -> tuple[List[StoredResource], int]:
        """Every resource of kind (in namespace, when given), and the revision they were read at."""
        ...

    async def snapshot(self, kinds: Collection[str]) -> tuple[List[StoredResource], int]:
        """Every resource of the given kinds, and a revision R to watch from (R + 1) to miss nothing."""
        ...

    def watch(
        self, kinds: Collection[str], start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[ResourceEvent]:
        """Changes from start_revision on (PUT with the resource, DELETE without); raises WatchCompacted
        when the history is gone (take a snapshot again). progress(R): every change up to R was yielded."""
        ...

    async def apply(self, documents: Sequence[Mapping[str, Any]]) -> ApplyResult:
        """Create or replace every document (validated first: bad input changes nothing)."""
        ...

    async def delete(self, refs: Sequence[ResourceRef]) -> List[ResourceRef]:
        """Delete what exists; the refs that were deleted."""
        ...

    # Compare-and-swap, object by object (what the pool IPAM builds on, as Calico's IPAM does in KDD).

    async def create(self, document: Mapping[str, Any]) -> StoredResource | None:
        """Store a new resource; None when one of that name exists."""
        ...

    async def replace(self, document: Mapping[str, Any], expected_revision: int) -> StoredResource | None:
        """Overwrite a resource still at expected_revision; None when it changed or is gone."""
        ...

    async def delete_at(self, ref: ResourceRef, expected_revision: int) -> bool:
        """Delete a resource still at expected_revision; False when it changed or is gone."""
        ...


if TYPE_CHECKING:  # mypy checks that the stores satisfy the Protocol
    from vpcnet.datastore.kube import KubeResourceStore
    from vpcnet.datastore.resources import ResourceStore

    _etcd: type[ResourceStoreLike] = ResourceStore
    _kube: type[ResourceStoreLike] = KubeResourceStore
