"""The one place a datastore is opened from settings: every caller (agent components, CLI) comes here.

The switch on `settings.type` is the seam where another backend (the Kubernetes API) sits beside etcd.
"""

from __future__ import annotations

from vpcnet.datastore.settings import DatastoreSettings, DatastoreType
from vpcnet.datastore.types import Datastore


async def open_datastore(settings: DatastoreSettings) -> Datastore:
    """A datastore for `settings`; the caller closes it. etcd connects on first use, so this does no I/O."""
    if settings.type is DatastoreType.ETCD:
        from vpcnet.datastore.etcd import EtcdDatastore

        return EtcdDatastore(settings.etcd())
    raise ValueError(f"datastore type {settings.type!r} is not supported")  # a new DatastoreType, unhandled
