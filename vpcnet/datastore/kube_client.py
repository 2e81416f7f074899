"""The HTTP edge of the Kubernetes datastore: aiohttp for transport, our own code for configuration
(datastore/kube_connect.py) and for everything a watch needs; kubernetes_asyncio only for a kubeconfig whose
user needs a credential plugin.

The clients weighed (read in their watch code; the choice is argued in the README's design section):
- `kubernetes_asyncio` 36.1 (aiohttp): every list call takes `allow_watch_bookmarks` and BOOKMARKs update its
  resume point; without timeoutSeconds its Watch retries a 410 once with the *same* resourceVersion (which
  can only fail again) and then raises, so the caller must relist anyway; it loads kubeconfig (certificates,
  tokens, exec plugins with refresh) and the in-cluster service account; py.typed; but importing any of it
  imports its `client` package, every generated API and model: 0.4-1.4 s of each process's start-up.
- `lightkube` 1.0 (httpx2, msgspec): on 410 its WatchDriver drops the resourceVersion and watches again from
  "now", so deletions in the gap are never seen; there is no bookmark parameter; ~0.1 s to import.
- `kubernetes` 37 (official) now ships `kubernetes.aio`, whose watch is the same code as
  kubernetes_asyncio's; its informer (relist and diff on 410) runs on a thread over the sync client; it
  pulls requests, oauthlib, websocket-client and pydantic as well.

None gives a reflector we can use in an asyncio agent, so the reflector is ours (datastore/reflector.py).
We send raw paths and read responses ourselves (one code path for built-in kinds and CRDs, no generated
models) over an aiohttp session, the transport kubernetes_asyncio itself uses; the kubeconfig or service
account is read by kube_connect.py. Credential plugins (`exec`, `auth-provider`: a cloud CLI, OIDC refresh)
are the library's to run, so such a kubeconfig goes through its ApiClient (PluginTransport), imported then.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from vpcnet.datastore.kube_connect import KubeConnection, load_connection, plugin_needed
from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.reflector import Gone, ListResult, WatchEvent
from vpcnet.datastore.types import DatastoreError, DatastoreUnavailable

if TYPE_CHECKING:
    from aiohttp import ClientResponse

JSON = "application/json"


class ApiStatusError(DatastoreError):
    """The API answered with an error Status; code and reason as it gave them."""

    def __init__(self, method: str, path: str, code: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path}: {code} {reason}: {message}")
        self.code = code
        self.reason = reason


def status_error(method: str, path: str, code: int, body: Any) -> ApiStatusError:
    body = body if isinstance(body, Mapping) else {}
    return ApiStatusError(method, path, code, str(body.get("reason", "")), str(body.get("message", body)))


class Transport(Protocol):
    """Sends one request; the aiohttp response, unread."""

    async def send(
        self, method: str, path: str, query: Mapping[str, str], body: Any, timeout: Any
    ) -> ClientResponse: ...

    async def close(self) -> None: ...


class SessionTransport:
    """Our own: an aiohttp session to the server a KubeConnection names, with its Authorization."""

    def __init__(self, conn: KubeConnection) -> None:
        import aiohttp

        self._conn = conn
        # trust_env: HTTPS_PROXY/NO_PROXY as any client honours them; read_bufsize: a watch event carries a
        # whole object, up to etcd's 1.5 MiB request limit (kubernetes_asyncio's session does the same).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=conn.ssl_context if conn.ssl_context is not None else True),
            trust_env=True,
            read_bufsize=2**21,
        )

    async def send(
        self, method: str, path: str, query: Mapping[str, str], body: Any, timeout: Any
    ) -> ClientResponse:
        import aiohttp

        headers = {"Accept": JSON, "Content-Type": JSON}
        authorization = self._conn.authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        url = self._conn.server + path + ("?" + urlencode(query) if query else "")
        if not isinstance(timeout, aiohttp.ClientTimeout):
            timeout = aiohttp.ClientTimeout(total=timeout)
        return await self._session.request(
            method,
            url,
            headers=headers,
            data=None if body is None else json.dumps(body),
            timeout=timeout,
            proxy=self._conn.proxy,
            server_hostname=self._conn.server_hostname,
        )

    async def close(self) -> None:
        await self._session.close()


class PluginTransport:
    """kubernetes_asyncio's ApiClient, for a kubeconfig whose user needs a credential plugin (`exec`,
    `auth-provider`): the library runs and refreshes those. Importing it costs about a second."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls, settings: KubeSettings) -> PluginTransport:
        from kubernetes_asyncio import config
        from kubernetes_asyncio.client import ApiClient, Configuration

        configuration = Configuration()
        try:
            await config.load_kube_config(
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
            )
        except Exception as err:  # ConfigException and the file errors under it
            raise DatastoreError(f"Kubernetes API configuration from {settings.kubeconfig}: {err}") from None
        return cls(ApiClient(configuration))

    async def send(
        self, method: str, path: str, query: Mapping[str, str], body: Any, timeout: Any
    ) -> ClientResponse:
        response: ClientResponse = await self._client.call_api(
            path,
            method,
            query_params=dict(query),
            header_params={"Accept": JSON, "Content-Type": JSON},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        return response

    async def close(self) -> None:
        await self._client.close()


class KubeApi:
    """Authenticated JSON requests and watch streams against one API server."""

    def __init__(self, transport: Transport, request_timeout: float) -> None:
        self._transport = transport
        self._timeout = request_timeout

    @classmethod
    async def connect(cls, settings: KubeSettings) -> KubeApi:
        transport: Transport
        if plugin_needed(settings):
            transport = await PluginTransport.connect(settings)
        else:
            transport = SessionTransport(load_connection(settings))
        return cls(transport, settings.request_timeout)

    async def close(self) -> None:
        await self._transport.close()

    async def _send(
        self, method: str, path: str, query: Mapping[str, str] | None, body: Any, timeout: Any
    ) -> ClientResponse:
        import aiohttp

        try:
            return await self._transport.send(method, path, dict(query or {}), body, timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise DatastoreUnavailable(f"{method} {path}: {type(err).__name__}: {err}") from None

    async def request(
        self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One request; (HTTP status, decoded JSON body). Error statuses are returned, not raised."""
        response = await self._send(method, path, query, body, self._timeout)
        try:
            raw = await response.read()
        finally:
            response.release()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        return int(response.status), decoded

    async def list(self, path: str) -> ListResult:
        status, body = await self.request("GET", path)
        if status != 200:
            raise status_error("GET", path, status, body)
        items = body.get("items") or []
        return ListResult(list(items), str((body.get("metadata") or {}).get("resourceVersion", "")))

    async def watch(
        self, path: str, resource_version: str, *, allow_bookmarks: bool, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        """One watch stream; raises Gone on 410 (as an HTTP status or an ERROR event), ends when the server
        ends it (timeoutSeconds)."""
        import aiohttp

        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true" if allow_bookmarks else "false",
            "timeoutSeconds": str(timeout_seconds),
        }
        # No total deadline: the stream is long-lived; the reflector detects a silent one.
        response = await self._send("GET", path, query, None, aiohttp.ClientTimeout(total=None, connect=30))
        try:
            if response.status != 200:
                body = await response.read()
                try:
                    decoded = json.loads(body)
                except ValueError:
                    decoded = body.decode(errors="replace")
                if response.status == 410:
                    raise Gone(str(status_error("GET", path, 410, decoded)))
                raise status_error("GET", path, int(response.status), decoded)
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, OSError) as err:
                    raise DatastoreUnavailable(f"watch {path}: {type(err).__name__}: {err}") from None
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise Gone(str(obj.get("message", "resource version too old")))
                    raise status_error("WATCH", path, code, obj)
                yield WatchEvent(str(kind), obj)
        finally:
            response.close()


class KindListerWatcher:
    """The reflector's ListerWatcher for one collection path."""

    def __init__(self, api: KubeApi, path: str) -> None:
        self.api = api
        self.path = path

    async def list(self) -> ListResult:
        return await self.api.list(self.path)

    def watch(
        self, resource_version: str, *, allow_bookmarks: bool, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        return self.api.watch(
            self.path, resource_version, allow_bookmarks=allow_bookmarks, timeout_seconds=timeout_seconds
        )
