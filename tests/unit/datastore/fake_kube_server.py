"""A small in-process HTTP server speaking the part of the Kubernetes API the kube store uses (aiohttp.web),
for the store's unit tests: list, watch (bookmarks, 410 after compaction, timeoutSeconds), get, create,
replace with resourceVersion (409 on mismatch), delete with preconditions. Objects are kept in memory with
one revision counter, as an etcd-backed API server keeps them. The lab's Kubernetes API (vpcnet/lab/kubeapi)
is the real stand-in; this one exists so the store's tests need nothing else.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from aiohttp import web

Key = tuple[str, str, str]  # (plural, namespace or "", name)


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    return web.json_response({**body, "message": message}, status=code)


class FakeKubeServer:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.rv = 1000
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, object)
        self.compacted = 0
        self.requests: list[tuple[str, str]] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # ------------------------------------------------------------------ test controls

    def write(self, plural: str, obj: dict[str, Any], type_: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (plural, meta.get("namespace", ""), meta["name"])
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        if type_ == "DELETED":
            self.objects.pop(key, None)
        else:
            type_ = "MODIFIED" if key in self.objects else "ADDED"
            stored["metadata"].setdefault("uid", f"uid-{self.rv}")
            self.objects[key] = stored
        self.history.append((self.rv, plural, type_, copy.deepcopy(stored)))
        self._changed.set()
        self._changed = asyncio.Event()
        return stored

    def compact(self) -> None:
        self.compacted = self.rv

    # ------------------------------------------------------------------ HTTP

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != "Bearer t0ken":
            return status(401, "Unauthorized", "no token")
        parts = request.path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]  # drop api/v1 or apis/<group>/<version>
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        plural, name = parts[0], (parts[1] if len(parts) > 1 else "")
        method = request.method
        if not name and method == "GET" and request.query.get("watch") == "true":
            return await self.watch(request, plural, namespace)
        if not name and method == "GET":
            items = [
                o
                for (p, ns, _), o in sorted(self.objects.items())
                if p == plural and ns in (namespace or ns,)
            ]
            return web.json_response({"items": items, "metadata": {"resourceVersion": str(self.rv)}})
        if not name and method == "POST":
            body = await request.json()
            body["metadata"].setdefault("namespace", namespace) if namespace else None
            if (plural, namespace, body["metadata"]["name"]) in self.objects:
                return status(409, "AlreadyExists", "exists")
            return web.json_response(self.write(plural, body), status=201)
        key = (plural, namespace, name)
        current = self.objects.get(key)
        if current is None:
            return status(404, "NotFound", f"{plural} {name} not found")
        if method == "GET":
            return web.json_response(current)
        if method == "PUT":
            body = await request.json()
            expected = body["metadata"].get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified")
            return web.json_response(self.write(plural, body))
        if method == "DELETE":
            options = await request.json() if request.can_read_body else {}
            expected = ((options or {}).get("preconditions") or {}).get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "precondition failed")
            return web.json_response(self.write(plural, current, "DELETED"))
        return status(405, "MethodNotAllowed", method)

    async def watch(self, request: web.Request, plural: str, namespace: str) -> web.StreamResponse:
        position = int(request.query.get("resourceVersion") or self.rv)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        if position < self.compacted:
            return status(410, "Expired", f"too old resource version: {position} ({self.compacted})")
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        end = loop.time() + int(request.query.get("timeoutSeconds", "60"))
        while loop.time() < end:
            if position < self.compacted:
                error = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                await response.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                break
            for rv, p, type_, obj in [h for h in self.history if h[0] > position]:
                position = rv
                if p == plural and (not namespace or obj["metadata"].get("namespace") == namespace):
                    await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
            if bookmarks and position < self.rv:
                position = self.rv
                mark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(position)}}}
                await response.write(json.dumps(mark).encode() + b"\n")
            changed = self._changed
            try:
                async with asyncio.timeout(max(0.0, end - loop.time())):
                    await changed.wait()
            except TimeoutError:
                break
        return response
