"""The HTTP face of the lab's Kubernetes API: discovery, OpenAPI, health, and the resource paths, with
every failure answered as a `Status` (404 for what is not served, 405 for a verb a path does not take)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from vpcnet.datastore.types import DatastoreError, DatastoreUnavailable
from vpcnet.lab.kubeapi import discovery, errors, tables
from vpcnet.lab.kubeapi.bodies import JSON, dump, load_object
from vpcnet.lab.kubeapi.errors import ApiError, bad_request, method_not_allowed
from vpcnet.lab.kubeapi.handlers import Verbs
from vpcnet.lab.kubeapi.httpd import HttpRequest, Responder
from vpcnet.lab.kubeapi.resources import Registry, ResourceType
from vpcnet.lab.kubeapi.routing import Target, parse_resource_path
from vpcnet.lab.kubeapi.selectors import make_selector
from vpcnet.lab.kubeapi.storage import ObjectStore
from vpcnet.lab.kubeapi.watch import WatchSpec, watch_events

log = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 1800.0  # seconds; the real server picks 30-60 minutes
_HEALTH = frozenset({"/healthz", "/livez", "/readyz"})


def _truthy(value: str) -> bool:
    return value.lower() in ("1", "true")


class KubeApp:
    """`async (HttpRequest, Responder)`: one per server."""

    def __init__(self, store: ObjectStore, registry: Registry, bookmark_interval: float = 5.0) -> None:
        self.store = store
        self.registry = registry
        self.verbs = Verbs(store, registry)
        self.bookmark_interval = bookmark_interval
        self.server_address = ""

    async def start(self) -> None:
        await self.verbs.start()

    async def __call__(self, request: HttpRequest, responder: Responder) -> None:
        try:
            await self._route(request, responder)
        except ApiError as err:
            await self._status(responder, err)
        except DatastoreUnavailable as err:
            await self._status(responder, ApiError(503, "ServiceUnavailable", f"etcd: {err}"))
        except DatastoreError as err:
            await self._status(responder, ApiError(500, "InternalError", f"etcd: {err}"))

    async def _status(self, responder: Responder, err: ApiError) -> None:
        if responder.started:
            return
        await responder.send(err.code, dump(err.status()), JSON)

    async def _json(self, responder: Responder, doc: Any, status: int = 200) -> None:
        await responder.send(status, dump(doc), JSON)

    async def _route(self, request: HttpRequest, responder: Responder) -> None:
        path = request.path.rstrip("/") or "/"
        _check_accept(request)
        if path in _HEALTH:
            await responder.send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            await self._json(responder, discovery.VERSION)
            return
        if path == "/openapi/v2":
            await self._openapi(request, responder)
            return
        parts = [p for p in path.split("/") if p]
        doc: dict[str, Any] | None = None
        if parts == ["api"]:
            doc = discovery.api_versions(self.server_address)
        elif parts == ["apis"]:
            doc = discovery.api_group_list(self.registry)
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(self.registry, parts[1])
        elif (parts[:2] == ["api", "v1"] and len(parts) == 2) or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            doc = discovery.resource_list(self.registry, group, version)
        elif parts[:1] in (["api"], ["apis"]):
            target = parse_resource_path(parts[1:])
            if target is None or (parts[0] == "api") != (target.group == ""):
                raise errors.path_not_found()
            await self._resource(request, responder, target)
            return
        if doc is None:
            raise errors.path_not_found()
        if request.method != "GET":
            raise method_not_allowed(f"the server does not allow this method on {path}")
        await self._json(responder, doc)

    async def _openapi(self, request: HttpRequest, responder: Responder) -> None:
        if discovery.OPENAPI_PROTOBUF in request.headers.get("accept", ""):
            # kube-openapi labels it octet-stream: Go's mime parser refuses the "@" of the protobuf type.
            await responder.send(200, discovery.openapi_v2_protobuf(), "application/octet-stream")
        else:
            await self._json(responder, discovery.openapi_v2_json())

    def _type(self, target: Target) -> ResourceType:
        rt = self.registry.lookup(target.group, target.version, target.plural)
        if rt is None:
            raise errors.path_not_found()
        if target.namespace is not None and not rt.namespaced:
            raise errors.path_not_found()
        if rt.namespaced and target.name is not None and target.namespace is None:
            raise errors.path_not_found()
        if target.subresource is not None and (target.subresource != "status" or not rt.status_subresource):
            raise errors.path_not_found()
        return rt

    async def _resource(self, request: HttpRequest, responder: Responder, target: Target) -> None:
        rt = self._type(target)
        method, ns, name = request.method, target.namespace, target.name
        if request.arg("dryRun") and method != "GET":
            raise bad_request("dryRun is not served by the lab's API")
        if name is None:
            selector = make_selector(request.arg("labelSelector"), request.arg("fieldSelector"), rt.kind)
            if method == "GET" and (target.watch_path or _truthy(request.arg("watch"))):
                await self._watch(request, responder, rt, ns, None)
            elif method == "GET":
                listing = await self.verbs.list(rt, ns, selector)
                if tables.wants_table(request.headers.get("accept", "")):
                    version = listing["metadata"]["resourceVersion"]
                    listing = tables.table(rt, listing["items"], version, request.arg("includeObject"))
                await self._json(responder, listing)
            elif method == "POST":
                if rt.namespaced and ns is None:
                    raise method_not_allowed(f"create {rt.plural} under /namespaces/<namespace>/{rt.plural}")
                body = load_object(request.body, request.headers.get("content-type", ""))
                await self._json(responder, await self.verbs.create(rt, ns, body), 201)
            elif method == "DELETE":
                await self._json(
                    responder, await self.verbs.delete_collection(rt, ns, selector, request.body)
                )
            else:
                raise method_not_allowed(f"{method} is not served on a collection of {rt.plural}")
            return
        status_only = target.subresource == "status"
        if method == "GET" and target.watch_path and not status_only:
            await self._watch(request, responder, rt, ns, name)
        elif method == "GET":
            obj = await self.verbs.get(rt, ns, name)
            if tables.wants_table(request.headers.get("accept", "")) and not status_only:
                obj = tables.table(
                    rt, [obj], obj["metadata"]["resourceVersion"], request.arg("includeObject")
                )
            await self._json(responder, obj)
        elif method == "PUT":
            body = load_object(request.body, request.headers.get("content-type", ""))
            await self._json(responder, await self.verbs.update(rt, ns, name, body, status_only=status_only))
        elif method == "PATCH":
            content_type = request.headers.get("content-type", "")
            obj = await self.verbs.patch(rt, ns, name, request.body, content_type, status_only=status_only)
            await self._json(responder, obj)
        elif method == "DELETE" and not status_only:
            await self._json(responder, await self.verbs.delete(rt, ns, name, request.body))
        else:
            raise method_not_allowed(f"{method} is not served on {request.path}")

    async def _watch(
        self, request: HttpRequest, responder: Responder, rt: ResourceType, ns: str | None, name: str | None
    ) -> None:
        fields = request.arg("fieldSelector")
        if name is not None:
            fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
        selector = make_selector(request.arg("labelSelector"), fields, rt.kind)
        version = request.arg("resourceVersion")
        try:
            start = None if version in ("", "0") else int(version)
            timeout = float(request.arg("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            raise bad_request(f'resourceVersion "{version}" or timeoutSeconds is not a number') from None
        if start is not None and start < 0:
            raise bad_request(f'resourceVersion "{version}" is negative')
        spec = WatchSpec(
            rt=rt,
            namespace=ns,
            selector=selector,
            start=start,
            bookmarks=_truthy(request.arg("allowWatchBookmarks")),
            timeout=timeout,
            bookmark_interval=self.bookmark_interval,
        )
        await responder.stream(200, JSON)
        events = watch_events(self.store, spec)
        if tables.wants_table(request.headers.get("accept", "")):
            events = _as_tables(events, rt, request.arg("includeObject"))
        streaming = asyncio.create_task(_stream_events(responder, events))
        gone = asyncio.create_task(responder.client_gone())  # a watcher that hangs up ends its etcd watch
        try:
            await asyncio.wait({streaming, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, gone):
                task.cancel()
            await asyncio.wait({streaming, gone})
        if not streaming.cancelled() and streaming.exception() is not None:
            raise streaming.exception()  # type: ignore[misc]


async def _as_tables(
    events: AsyncIterator[dict[str, Any]], rt: ResourceType, include: str
) -> AsyncIterator[dict[str, Any]]:
    """A watch for a Table: each event's object becomes a one-row Table (bookmarks and errors as they are)."""
    try:
        async for event in events:
            obj = event.get("object") or {}
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and obj.get("kind") != "Status":
                version = obj.get("metadata", {}).get("resourceVersion", "")
                event = {**event, "object": tables.table(rt, [obj], version, include)}
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _stream_events(responder: Responder, events: AsyncIterator[dict[str, Any]]) -> None:
    try:
        async for event in events:
            await responder.chunk(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        await responder.end()
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _check_accept(request: HttpRequest) -> None:
    """406 when the client takes only what the lab does not write (protobuf, CBOR)."""
    accept = request.headers.get("accept", "")
    if not accept or request.path.startswith("/openapi/"):
        return
    if not any(t in accept for t in ("json", "*/*", "text/")):
        raise ApiError(
            406,
            "NotAcceptable",
            f'only the following media types are accepted: application/json (got "{accept}")',
        )
