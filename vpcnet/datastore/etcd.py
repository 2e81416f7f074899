"""The etcd v3 datastore, over gRPC with aetcd's generated stubs (asyncio).

We drive the stubs ourselves rather than aetcd's high-level Client because we need what it leaves out:
transactions with arbitrary conditions, paged ranges pinned to one revision, and watches that we own
stream by stream, so that a reconnect resumes exactly after the last event delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from aetcd import rpc

from vpcnet.datastore.settings import EtcdSettings
from vpcnet.datastore.types import (
    Condition,
    DatastoreError,
    DatastoreUnavailable,
    DeleteOp,
    EventType,
    KeyValue,
    Listing,
    PutOp,
    RevisionIs,
    WatchCompacted,
    WatchEvent,
    WriteOp,
    prefix_range_end,
)

log = logging.getLogger(__name__)

# Codes that mean "this endpoint did not answer": try another one (or the same one again, later).
_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_LIST_PAGE = 1000
_CHANNEL_OPTIONS = (
    # Reconnect quickly after an etcd restart (gRPC's default backoff grows to minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Notice a dead peer on an idle watch; etcd refuses pings more often than every 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)
_WATCH_BACKOFF_START = 0.05
PROGRESS_INTERVAL = 0.1  # seconds between progress requests on a watch that wants them
_WATCH_BACKOFF_MAX = 2.0


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode(),
        value=bytes(raw.value),
        create_revision=raw.create_revision,
        mod_revision=raw.mod_revision,
        version=raw.version,
        lease=raw.lease,
    )


class EtcdDatastore:
    """Implements vpcnet.datastore.types.Datastore. One gRPC channel per endpoint, opened on first use;
    a request that finds its endpoint unavailable moves everyone on to the next endpoint."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._channels: dict[int, Any] = {}
        self._current = 0
        self._closed = False
        self._write_timeout = min(settings.request_timeout, settings.unavailable_retry_seconds)

    # --- plumbing -------------------------------------------------------------------------------------------

    def _channel(self) -> tuple[int, Any]:
        if self._closed:
            raise DatastoreError("etcd datastore is closed")
        index = self._current
        channel = self._channels.get(index)
        if channel is None:
            target = self._settings.endpoints[index].target
            if self._settings.tls is None:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(target, self._credentials(), options=_CHANNEL_OPTIONS)
            self._channels[index] = channel
        return index, channel

    def _credentials(self) -> Any:
        """TLS credentials from the settings' files, read when a channel opens (a renewed certificate is
        picked up by the next channel)."""
        assert self._settings.tls is not None
        try:
            ca, key, chain = self._settings.tls.read()
        except OSError as exc:
            raise DatastoreError(f"etcd TLS: cannot read {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)

    def _failed(self, index: int) -> None:
        if self._current == index and len(self._settings.endpoints) > 1:
            self._current = (index + 1) % len(self._settings.endpoints)
            log.warning(
                "etcd endpoint %s unavailable, moving to %s",
                self._settings.endpoints[index].target,
                self._settings.endpoints[self._current].target,
            )

    def _endpoints_text(self) -> str:
        return ", ".join(e.target for e in self._settings.endpoints)

    async def _call(self, stub_class: Any, method: str, request: Any, *, retry: bool) -> Any:
        """One unary request. Reads (retry=True) keep trying across endpoints for a while; writes raise
        DatastoreUnavailable at once, because a write that may have landed must be re-read, not repeated."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.unavailable_retry_seconds
        delay = 0.05
        while True:
            index, channel = self._channel()
            try:
                # A write waits for a connection instead of failing fast: not yet sent, it is safe to hold.
                return await getattr(stub_class(channel), method)(
                    request,
                    timeout=self._settings.request_timeout if retry else self._write_timeout,
                    wait_for_ready=not retry,
                )
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code not in _UNAVAILABLE_CODES:
                    raise DatastoreError(f"etcd {method}: {code.name}: {err.details()}") from None
                self._failed(index)
                if not retry or loop.time() + delay > deadline:
                    detail = f"{code.name}: {err.details()}"
                    raise DatastoreUnavailable(
                        f"etcd {method}: no answer from {self._endpoints_text()} ({detail})"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    # --- key-value ------------------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        response = await self._call(rpc.KVStub, "Range", rpc.RangeRequest(key=key.encode()), retry=True)
        return _kv(response.kvs[0]) if response.kvs else None

    async def get_at(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at store revision `revision` (a DatastoreError once that is compacted)."""
        request = rpc.RangeRequest(key=key.encode(), revision=revision)
        response = await self._call(rpc.KVStub, "Range", request, retry=True)
        return _kv(response.kvs[0]) if response.kvs else None

    async def current_revision(self) -> int:
        response = await self._call(
            rpc.KVStub, "Range", rpc.RangeRequest(key=b"\0", count_only=True), retry=True
        )
        return int(response.header.revision)

    async def list(self, prefix: str) -> Listing:
        """All keys under prefix, read in pages that are all pinned to the revision of the first page."""
        start = prefix.encode()
        end = prefix_range_end(prefix)
        revision = 0
        items: list[KeyValue] = []
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=_LIST_PAGE, revision=revision)
            try:
                response = await self._call(rpc.KVStub, "Range", request, retry=True)
            except DatastoreError as err:
                if "compacted" in str(err) and revision:
                    # The pinned revision went away between pages: start over at the present.
                    start, revision, items = prefix.encode(), 0, []
                    continue
                raise
            if not revision:
                revision = int(response.header.revision)
            items.extend(_kv(raw) for raw in response.kvs)
            if not response.more or not response.kvs:
                return Listing(items=items, revision=revision)
            start = bytes(response.kvs[-1].key) + b"\0"

    async def commit(self, conditions: Sequence[Condition], writes: Sequence[WriteOp]) -> int | None:
        compares = [
            rpc.Compare(
                key=c.key.encode(),
                target=rpc.Compare.MOD,
                result=rpc.Compare.EQUAL,
                mod_revision=c.mod_revision,
            )
            for c in conditions
        ]
        ops = []
        for write in writes:
            if isinstance(write, PutOp):
                put = rpc.PutRequest(key=write.key.encode(), value=write.value, lease=write.lease)
                ops.append(rpc.RequestOp(request_put=put))
            elif isinstance(write, DeleteOp):
                ops.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=write.key.encode())))
        response = await self._call(
            rpc.KVStub, "Txn", rpc.TxnRequest(compare=compares, success=ops, failure=[]), retry=False
        )
        return int(response.header.revision) if response.succeeded else None

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        revision = await self.commit([], [PutOp(key, value, lease)])
        assert revision is not None  # no conditions: cannot fail
        return revision

    async def create(self, key: str, value: bytes, lease: int = 0) -> int | None:
        return await self.compare_and_swap(key, value, 0, lease)

    async def compare_and_swap(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> int | None:
        return await self.commit([RevisionIs(key, mod_revision)], [PutOp(key, value, lease)])

    async def delete(self, key: str, mod_revision: int | None = None) -> bool:
        if mod_revision is None:
            response = await self._call(
                rpc.KVStub, "DeleteRange", rpc.DeleteRangeRequest(key=key.encode()), retry=False
            )
            return int(response.deleted) > 0
        compare = rpc.Compare(
            key=key.encode(), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=mod_revision
        )
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key.encode()))
        response = await self._call(
            rpc.KVStub, "Txn", rpc.TxnRequest(compare=[compare], success=[op], failure=[]), retry=False
        )
        if not response.succeeded:
            return False
        return int(response.responses[0].response_delete_range.deleted) > 0

    async def compact(self, revision: int) -> None:
        """Drop history before revision (as etcd's auto-compaction does); older watches then fail."""
        await self._call(
            rpc.KVStub, "Compact", rpc.CompactionRequest(revision=revision, physical=True), retry=False
        )

    # --- leases ---------------------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: int) -> int:
        response = await self._call(
            rpc.LeaseStub, "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl_seconds), retry=False
        )
        if response.error:
            raise DatastoreError(f"etcd lease grant: {response.error}")
        return int(response.ID)

    async def keep_alive(self, lease_id: int) -> int:
        index, channel = self._channel()
        call = rpc.LeaseStub(channel).LeaseKeepAlive(timeout=self._settings.request_timeout)
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            response = await call.read()
        except grpc.aio.AioRpcError as err:
            if err.code() in _UNAVAILABLE_CODES:
                self._failed(index)
                raise DatastoreUnavailable(f"etcd lease keep-alive: {err.details()}") from None
            raise DatastoreError(f"etcd lease keep-alive: {err.code().name}: {err.details()}") from None
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise DatastoreUnavailable("etcd lease keep-alive: stream closed")
        return int(response.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        try:
            await self._call(rpc.LeaseStub, "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id), retry=False)
        except DatastoreError as err:
            if "not found" not in str(err):
                raise

    # --- watch ----------------------------------------------------------------------------------------------

    async def watch(
        self, prefix: str, start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events under prefix from start_revision, in revision order. A broken stream (etcd restarted, an
        endpoint died) is re-opened from the revision after the last event delivered, so nothing is lost
        or repeated; compacted history raises WatchCompacted.

        With `progress`, the stream asks etcd for its progress every PROGRESS_INTERVAL seconds and calls
        progress(R) when etcd answers that everything under prefix up to revision R has been sent: every
        event up to R has then been yielded (and handled by the consumer) before the call."""
        next_revision = start_revision
        delay = _WATCH_BACKOFF_START
        key = prefix.encode()
        range_end = prefix_range_end(prefix)
        ticker: asyncio.Task[None] | None = None
        while True:
            index, channel = self._channel()
            call = rpc.WatchStub(channel).Watch()
            try:
                create = rpc.WatchCreateRequest(
                    key=key, range_end=range_end, start_revision=next_revision, progress_notify=True
                )
                await call.write(rpc.WatchRequest(create_request=create))
                if progress is not None:
                    ticker = asyncio.create_task(_request_progress(call))
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise DatastoreUnavailable("watch stream ended")
                    if response.compact_revision:
                        raise WatchCompacted(prefix, next_revision, int(response.compact_revision))
                    if response.canceled:
                        raise DatastoreError(
                            f"etcd cancelled the watch of {prefix!r}: {response.cancel_reason}"
                        )
                    delay = _WATCH_BACKOFF_START
                    for event in response.events:
                        kv = event.kv
                        if event.type == rpc.Event.DELETE:
                            yield WatchEvent(EventType.DELETE, kv.key.decode(), None, int(kv.mod_revision))
                        else:
                            yield WatchEvent(
                                EventType.PUT,
                                kv.key.decode(),
                                bytes(kv.value),
                                int(kv.mod_revision),
                                int(kv.create_revision),
                            )
                        next_revision = int(kv.mod_revision) + 1
                    if not response.events and not response.created:
                        # A progress notification: nothing under prefix up to header.revision.
                        next_revision = max(next_revision, int(response.header.revision) + 1)
                        if progress is not None:
                            progress(int(response.header.revision))
            except grpc.aio.AioRpcError as err:
                if err.code() not in _UNAVAILABLE_CODES:
                    raise DatastoreError(
                        f"etcd watch of {prefix!r}: {err.code().name}: {err.details()}"
                    ) from None
                self._failed(index)
                log.info(
                    "etcd watch of %r broken (%s); resuming from %d", prefix, err.code().name, next_revision
                )
            except DatastoreUnavailable:
                self._failed(index)
            finally:
                if ticker is not None:
                    ticker.cancel()
                    ticker = None
                call.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _WATCH_BACKOFF_MAX)

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


async def _request_progress(call: Any) -> None:
    """Ask for a progress notification now and then (etcd answers once the stream has sent everything)."""
    with contextlib.suppress(Exception):  # the stream closing ends this; the read loop reports why
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            await call.write(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
