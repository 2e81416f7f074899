"""The one place a datastore is opened from settings: every caller (agent components, CLI) comes here.

`open_store` gives the per-kind resource store (ResourceStoreLike) over either backend: a ResourceStore over
etcd, or the KubeResourceStore over the Kubernetes API. Over etcd it also hands out the raw key-value
Datastore (`kv`), which the pool IPAM still needs (its blocks are etcd transactions); over the API there is
none, and a caller that needs one says so (`OpenStore.need_kv`). `open_datastore` is the raw etcd
Datastore alone, for what only ever lives in etcd (the pool IPAM tools, kube-controllers' mirror target).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vpcnet.datastore.settings import TYPE_VARIABLE, DatastoreSettings, DatastoreType
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import Datastore, DatastoreError

if TYPE_CHECKING:
    from vpcnet.datastore.kube import KubeResourceStore


@dataclass
class OpenStore:
    settings: DatastoreSettings
    store: ResourceStoreLike
    kv: Datastore | None  # etcd only
    _close: Callable[[], Awaitable[None]]

    async def close(self) -> None:
        await self._close()

    def need_kv(self, who: str) -> Datastore:
        """The raw etcd datastore, or a clear error naming the setting when the backend has none."""
        if self.kv is None:
            raise DatastoreError(
                f"{who} needs the etcd datastore ({TYPE_VARIABLE}=etcd); it is {self.settings.type.value}"
            )
        return self.kv


def preload(kind: DatastoreType) -> None:
    """Import the code open_store needs for a backend, ahead of time: for a caller with time to spare before
    it opens one (an agent at its start gate, `lab up` while its daemon starts). The HTTP client alone is
    a few tenths of a second on a loaded machine."""
    modules = {
        DatastoreType.KUBERNETES: ("vpcnet.datastore.kube", "aiohttp"),  # kube_client imports aiohttp lazily
        DatastoreType.ETCD: ("vpcnet.datastore.etcd",),
    }
    for name in modules.get(kind, ()):
        importlib.import_module(name)


async def open_store(settings: DatastoreSettings) -> OpenStore:
    """The resource store for `settings`; the caller closes it. No I/O to the backend here: etcd connects
    on first use, the Kubernetes store lists on first read (only its kubeconfig is read now)."""
    if settings.type is DatastoreType.ETCD:
        from vpcnet.datastore.etcd import EtcdDatastore
        from vpcnet.datastore.resources import ResourceStore

        datastore = EtcdDatastore(settings.etcd())
        return OpenStore(settings, ResourceStore(datastore), datastore, datastore.close)
    if settings.type is DatastoreType.KUBERNETES:
        from vpcnet.datastore.kube import KubeResourceStore
        from vpcnet.datastore.kube_client import KubeApi
        from vpcnet.datastore.kube_settings import KubeSettings

        kube = settings.kube or KubeSettings.from_env()
        store = KubeResourceStore(await KubeApi.connect(kube))
        return OpenStore(settings, store, None, store.close)
    raise ValueError(f"datastore type {settings.type!r} is not supported")  # a new DatastoreType, unhandled


async def open_datastore(settings: DatastoreSettings) -> Datastore:
    """The raw etcd datastore for `settings` (whatever their type: its endpoints); the caller closes it.
    etcd connects on first use, so this does no I/O."""
    from vpcnet.datastore.etcd import EtcdDatastore

    return EtcdDatastore(settings.etcd())


async def open_kube_store(kubeconfig: Path, *, sync_timeout: float = 60.0) -> KubeResourceStore:
    """The Kubernetes store over the API a kubeconfig names (what the lab's control plane and the CLI use);
    the caller closes it."""
    from vpcnet.datastore.kube import KubeResourceStore
    from vpcnet.datastore.kube_client import KubeApi
    from vpcnet.datastore.kube_settings import KubeSettings

    return KubeResourceStore(await KubeApi.connect(KubeSettings(kubeconfig)), sync_timeout=sync_timeout)
