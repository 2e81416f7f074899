"""The one place a datastore is opened from settings: every caller (agent components, CLI) comes here.

The switch on `settings.type` is the seam where another backend (the Kubernetes API) sits beside etcd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpcnet.datastore.settings import DatastoreSettings, DatastoreType
from vpcnet.datastore.types import Datastore

if TYPE_CHECKING:
    from vpcnet.datastore.store import ResourceStoreLike


async def open_datastore(settings: DatastoreSettings) -> Datastore:
    """A datastore for `settings`; the caller closes it. etcd connects on first use, so this does no I/O."""
    if settings.type is DatastoreType.ETCD:
        from vpcnet.datastore.etcd import EtcdDatastore

        return EtcdDatastore(settings.etcd())
    raise ValueError(f"datastore type {settings.type!r} is not supported")  # a new DatastoreType, unhandled


async def open_resource_store(settings: DatastoreSettings) -> ResourceStoreLike:
    """A per-kind resource store for `settings` (etcd, or the Kubernetes API where the factory serves it);
    the caller closes it with close_resource_store."""
    from vpcnet.datastore.resources import ResourceStore

    return ResourceStore(await open_datastore(settings))


async def close_resource_store(store: ResourceStoreLike) -> None:
    """Close what open_resource_store opened (the etcd connection, or the API client and its watches)."""
    close = getattr(store, "close", None)
    if close is not None:
        await close()
        return
    datastore = getattr(store, "datastore", None)
    if datastore is not None:
        await datastore.close()
