"""A small asyncio client for the Kubernetes API (plain HTTP, JSON): requests, and watches read as a stream
of events. The project's reflector (vpcnet/datastore, Kubernetes backend) is the long-term home of list+watch;
this client is what the lab's kubelet and kube-controllers need until then, and no more."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

Obj = dict[str, Any]


class ApiError(RuntimeError):
    """The API answered a Status (or could not be reached: code 0)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if code else message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ApiKind:
    """Where a kind is served: /api/v1/... (group "") or /apis/<group>/<version>/..."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


def server_from_kubeconfig(path: Path) -> str:
    """The server URL of the kubeconfig's current context."""
    try:
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        return str(cluster["server"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration) as exc:
        raise ApiError(0, "", f"kubeconfig {path}: no server for its current context ({exc!r})") from None


class ApiClient:
    """One connection per request (the lab's API is local; watches hold their own connection)."""

    def __init__(self, server: str, timeout: float = 30.0) -> None:
        parts = urlsplit(server)
        if parts.scheme != "http" or not parts.hostname:
            raise ApiError(0, "", f"API server {server!r}: only plain http://host:port is served by the lab")
        self.server = server
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout

    async def _open(self, method: str, target: str, body: bytes | None, content_type: str) -> Any:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=16 * 1024 * 1024), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ApiError(0, "", f"API server {self.server} unreachable: {exc}") from None
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Accept: {JSON}"]
        head.append("Connection: close")
        if body is not None:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await writer.drain()
        status_line = await reader.readline()
        try:
            code = int(status_line.split()[1])
        except (IndexError, ValueError):
            writer.close()
            raise ApiError(0, "", f"API server {self.server}: bad response {status_line[:80]!r}") from None
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return code, headers, reader, writer

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> Obj:
        """The JSON answer; ApiError for any status >= 400 (with the Status's reason and message)."""
        target = path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()

        async def go() -> tuple[int, bytes]:
            code, headers, reader, writer = await self._open(method, target, data, content_type)
            try:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    payload = b"".join([c async for c in _chunks(reader)])
                elif "content-length" in headers:
                    payload = await reader.readexactly(int(headers["content-length"]))
                else:
                    payload = await reader.read()
            finally:
                writer.close()
            return code, payload

        try:
            code, payload = await asyncio.wait_for(go(), self.timeout)
        except TimeoutError:
            raise ApiError(0, "", f"{method} {path}: no answer in {self.timeout:.0f} s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise ApiError(0, "", f"{method} {path}: {exc}") from None
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            doc = {"message": payload[:200].decode(errors="replace")}
        if code >= 400:
            raise ApiError(code, str(doc.get("reason", "")), str(doc.get("message", doc)))
        return doc if isinstance(doc, dict) else {"items": doc}

    async def get(self, kind: ApiKind, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def list(self, kind: ApiKind, namespace: str | None = None, **query: str) -> Obj:
        return await self.request("GET", kind.path(namespace), query=query or None)

    async def create(self, kind: ApiKind, obj: Obj) -> Obj:
        namespace = obj.get("metadata", {}).get("namespace") if kind.namespaced else None
        return await self.request("POST", kind.path(namespace), obj)

    async def replace(self, kind: ApiKind, obj: Obj, sub: str | None = None) -> Obj:
        meta = obj["metadata"]
        return await self.request("PUT", kind.path(meta.get("namespace"), meta["name"], sub), obj)

    async def patch(
        self, kind: ApiKind, namespace: str | None, name: str, patch: Obj, content_type: str = MERGE_PATCH
    ) -> Obj:
        return await self.request("PATCH", kind.path(namespace, name), patch, content_type=content_type)

    async def delete(self, kind: ApiKind, namespace: str | None, name: str) -> bool:
        """True if it was there."""
        try:
            await self.request("DELETE", kind.path(namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def watch(
        self, kind: ApiKind, resource_version: str, *, timeout_seconds: int = 300, **query: str
    ) -> AsyncIterator[Obj]:
        """The events after resource_version (with bookmarks), until the server ends the stream."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **query,
        }
        code, _headers, reader, writer = await self._open(
            "GET", f"{kind.path()}?{urlencode(params)}", None, JSON
        )
        try:
            if code >= 400:
                raise ApiError(code, "", f"watch {kind.plural}: HTTP {code}")
            buffered = b""
            async for chunk in _chunks(reader):
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            writer.close()


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readline()
        yield data
