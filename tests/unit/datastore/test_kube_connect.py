"""Reading a kubeconfig or the service account ourselves (datastore/kube_connect.py), and the aiohttp
transport over it: against a real TLS server (aiohttp.web) that asks for a client certificate (certificates
made by openssl), and a credential plugin run by kubernetes_asyncio."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from vpcnet.datastore import kube_connect
from vpcnet.datastore.kube_client import KubeApi, PluginTransport, SessionTransport
from vpcnet.datastore.kube_connect import BearerToken, load_connection, plugin_needed
from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.types import DatastoreError


def write_config(path: Path, cluster: dict[str, Any], user: dict[str, Any], current: str = "lab") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": cluster},
            {"name": "other", "cluster": {"server": "http://x:1"}},
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "lab", "context": {"cluster": "c", "user": "u"}},
            {"name": "bare", "context": {"cluster": "other"}},
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for the name kube.lab (not the address dialled: tls-server-name picks it)
    and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *key, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-subj", "/CN=t-ca"
    )
    for name, ext in (("server", "subjectAltName=DNS:kube.lab"), ("client", "extendedKeyUsage=clientAuth")):
        openssl(
            "req",
            *key,
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
            "-subj",
            f"/CN={name}",
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        ca = ["-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2"]
        out = ["-out", str(d / f"{name}.crt"), "-extfile", str(d / f"{name}.ext")]
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), *ca, *out)
    return d


def test_token_and_context_from_a_plain_kubeconfig(tmp_path: Path) -> None:
    path = write_config(tmp_path / "kc", {"server": "http://127.0.0.1:6443/"}, {"token": "abc"})
    conn = load_connection(KubeSettings(path))
    assert conn.server == "http://127.0.0.1:6443" and conn.ssl_context is None
    assert conn.authorization() == "Bearer abc"
    bare = load_connection(KubeSettings(path, context="bare"))
    assert bare.server == "http://x:1" and bare.authorization() is None
    config = yaml.safe_load(path.read_text())
    config["users"] = []  # a context's user the file lacks: no credentials, as kubernetes_asyncio reads it
    path.write_text(yaml.safe_dump(config))
    assert load_connection(KubeSettings(path)).authorization() is None


def test_token_file_is_relative_to_the_kubeconfig_and_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tok").write_text("first\n")
    path = write_config(tmp_path / "kc", {"server": "http://h:1"}, {"tokenFile": "tok"})
    conn = load_connection(KubeSettings(path))
    assert conn.authorization() == "Bearer first"
    (tmp_path / "tok").write_text("second\n")
    assert conn.authorization() == "Bearer first"  # not on every request
    monkeypatch.setattr(kube_connect, "TOKEN_REREAD_S", -1.0)
    assert conn.authorization() == "Bearer second"


def test_username_and_password_are_basic_auth(tmp_path: Path) -> None:
    path = write_config(tmp_path / "kc", {"server": "http://h:1"}, {"username": "ann", "password": "pw"})
    assert (
        load_connection(KubeSettings(path)).authorization() == "Basic " + base64.b64encode(b"ann:pw").decode()
    )


@pytest.mark.parametrize(
    ("cluster", "user", "context", "problem"),
    [
        ({"server": "http://h:1"}, {}, "nope", "no context named 'nope'"),
        ({}, {}, None, "the cluster has no server"),
        (
            {"server": "https://h:1", "certificate-authority": "missing.crt"},
            {},
            None,
            "missing.crt: No such file",
        ),
        ({"server": "https://h:1", "certificate-authority-data": "%%%"}, {}, None, "certificate-authority"),
        ({"server": "http://h:1"}, {"tokenFile": "absent"}, None, "token file .*absent"),
    ],
)
def test_bad_kubeconfigs_are_clear_errors(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], context: str | None, problem: str
) -> None:
    path = write_config(tmp_path / "kc", cluster, user)
    with pytest.raises(DatastoreError, match=f"{tmp_path}/kc: .*{problem}"):
        load_connection(KubeSettings(path, context=context)).authorization()


def test_in_cluster_reads_the_service_account(tmp_path: Path, pki: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = kube_connect._in_cluster(env, account)
    assert conn.server == "https://[fd00::1]:443" and conn.authorization() == "Bearer sa-token"
    assert conn.ssl_context is not None and conn.ssl_context.verify_mode == ssl.CERT_REQUIRED
    (account / "token").write_text("")
    with pytest.raises(DatastoreError, match=r"token file .* is empty"):
        kube_connect._in_cluster(env, account)
    with pytest.raises(DatastoreError, match="KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset"):
        kube_connect._in_cluster({}, account)


def test_a_credential_plugin_goes_to_the_client_library(tmp_path: Path) -> None:
    plugin = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}
    assert plugin_needed(KubeSettings(write_config(tmp_path / "a", {"server": "https://h:1"}, plugin)))
    assert not plugin_needed(
        KubeSettings(write_config(tmp_path / "b", {"server": "https://h:1"}, {"token": "t"}))
    )
    assert not plugin_needed(KubeSettings(None))
    api = asyncio.run(
        KubeApi.connect(KubeSettings(write_config(tmp_path / "c", {"server": "http://h:1"}, {})))
    )
    assert isinstance(api._transport, SessionTransport)
    asyncio.run(api.close())


def test_an_exec_plugin_runs_through_the_client_library(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps({**credential, 'status': {'token': 'from-plugin'}})}'\n")
    plugin.chmod(0o755)
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "PodList", "metadata": {"resourceVersion": "3"}, "items": []})

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/pods", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        user = {
            "exec": {
                "apiVersion": credential["apiVersion"],
                "command": str(plugin),
                "interactiveMode": "Never",
            }
        }
        path = write_config(tmp_path / "kc", {"server": f"http://127.0.0.1:{runner.addresses[0][1]}"}, user)
        try:
            api = await KubeApi.connect(KubeSettings(path))
            try:
                assert isinstance(api._transport, PluginTransport)
                assert (await api.list("/api/v1/pods")).resource_version == "3"
            finally:
                await api.close()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert seen == ["Bearer from-plugin"]


def test_tls_with_a_client_certificate_and_a_server_name(tmp_path: Path, pki: Path) -> None:
    seen: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        seen.append((request.headers.get("Authorization", ""), str(subject.get("commonName"))))
        return web.json_response({"kind": "NodeList", "metadata": {"resourceVersion": "7"}, "items": []})

    async def run() -> None:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        server_tls.load_cert_chain(str(pki / "server.crt"), str(pki / "server.key"))
        server_tls.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_get("/api/v1/nodes", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
        port = runner.addresses[0][1]
        try:
            cluster = {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority": str(pki / "ca.crt"),
                "tls-server-name": "kube.lab",
            }
            user = {
                "client-certificate-data": base64.b64encode((pki / "client.crt").read_bytes()).decode(),
                "client-key": str(pki / "client.key"),
                "token": "tok",
            }
            api = await KubeApi.connect(KubeSettings(write_config(tmp_path / "kc", cluster, user)))
            try:
                listed = await api.list("/api/v1/nodes")
            finally:
                await api.close()
            assert listed.resource_version == "7"
            # Without the server name the certificate does not match the address dialled.
            del cluster["tls-server-name"]
            api = await KubeApi.connect(KubeSettings(write_config(tmp_path / "kc2", cluster, user)))
            try:
                with pytest.raises(DatastoreError, match="certificate"):
                    await api.list("/api/v1/nodes")
            finally:
                await api.close()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert seen == [("Bearer tok", "client")]


def test_bearer_token_needs_text_or_a_file() -> None:
    assert BearerToken("Bearer", text="x").header() == "Bearer x"


def test_a_plain_kubeconfig_does_not_import_the_client_library(tmp_path: Path) -> None:
    """The point of reading kubeconfigs ourselves: kubernetes_asyncio's import is most of a second."""
    path = write_config(tmp_path / "kc", {"server": "http://127.0.0.1:1"}, {"token": "t"})
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from vpcnet.datastore.open import open_kube_store\n"
        f"store = asyncio.run(open_kube_store(Path({str(path)!r})))\n"
        "asyncio.run(store.close())\n"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
