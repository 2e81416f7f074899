from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vpcnet.datastore.settings import (
    DEPRECATED_ENDPOINTS_VARIABLE,
    ENDPOINTS_VARIABLE,
    DatastoreSettings,
    DatastoreSettingsError,
    DatastoreType,
    Endpoint,
    EtcdTls,
    parse_endpoint,
    read_datastore_settings,
)
from vpcnet.datastore.types import prefix_range_end


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("http://10.0.0.1:2379", Endpoint("10.0.0.1", 2379)),
        ("10.0.0.1:23790", Endpoint("10.0.0.1", 23790)),
        ("etcd-1", Endpoint("etcd-1", 2379)),
        ("http://[fd00::1]:2379", Endpoint("fd00::1", 2379)),
    ],
)
def test_parse_endpoint(text: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(text) == endpoint


def test_ipv6_target_has_brackets() -> None:
    assert Endpoint("fd00::1", 2379).target == "[fd00::1]:2379"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://a:1", "scheme 'ftp'"),
        ("http://a:99999", "bad port"),
        ("", "empty"),
        ("http://a:1/x", "path"),
    ],
)
def test_bad_endpoint_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)


def test_endpoints_from_env() -> None:
    settings = read_datastore_settings({ENDPOINTS_VARIABLE: "http://a:1, b:2 ,"})
    assert settings == DatastoreSettings(DatastoreType.ETCD, ("http://a:1", "b:2"))
    assert settings.etcd().endpoints == (Endpoint("a", 1), Endpoint("b", 2))
    assert read_datastore_settings({}).etcd().endpoints == (Endpoint("127.0.0.1", 2379),)
    assert read_datastore_settings({}, default_endpoints=["c:3"]).endpoints == ("c:3",)
    with pytest.raises(
        DatastoreSettingsError, match=f"^{ENDPOINTS_VARIABLE}: etcd endpoints: the list is empty"
    ):
        read_datastore_settings({ENDPOINTS_VARIABLE: " , "})


def test_the_deprecated_endpoints_name_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vpcnet.datastore.settings"):
        settings = read_datastore_settings({DEPRECATED_ENDPOINTS_VARIABLE: "http://old:1"})
    assert settings.endpoints == ("http://old:1",)
    assert f"{DEPRECATED_ENDPOINTS_VARIABLE} is deprecated: use {ENDPOINTS_VARIABLE}" in caplog.text
    # a bad value is reported under the name the user wrote
    with pytest.raises(DatastoreSettingsError, match=f"^{DEPRECATED_ENDPOINTS_VARIABLE}: .*no host"):
        read_datastore_settings({DEPRECATED_ENDPOINTS_VARIABLE: "http://:9"})


def test_the_canonical_endpoints_name_wins_and_the_ignored_one_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {ENDPOINTS_VARIABLE: "http://new:1", DEPRECATED_ENDPOINTS_VARIABLE: "http://old:1"}
    with caplog.at_level(logging.WARNING, logger="vpcnet.datastore.settings"):
        assert read_datastore_settings(env).endpoints == ("http://new:1",)
    assert f"{DEPRECATED_ENDPOINTS_VARIABLE} is deprecated and ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vpcnet.datastore.settings"):
        read_datastore_settings({ENDPOINTS_VARIABLE: "http://new:1"})
    assert caplog.text == ""


def test_calicos_etcd_endpoints_is_not_read() -> None:
    assert read_datastore_settings({"ETCD_ENDPOINTS": "http://calico:2379"}).endpoints == (
        "http://127.0.0.1:2379",
    )


@pytest.mark.parametrize("value", ["consul", "zookeeper"])
def test_an_unknown_datastore_type_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(
        DatastoreSettingsError, match=f"VPCNET_DATASTORE_TYPE='{value}': expected one of kubernetes, etcd"
    ):
        read_datastore_settings({"VPCNET_DATASTORE_TYPE": value})
    assert read_datastore_settings({"VPCNET_DATASTORE_TYPE": "ETCD"}).type is DatastoreType.ETCD


IN_POD = {"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, DatastoreType.ETCD),
        (IN_POD, DatastoreType.KUBERNETES),
        ({**IN_POD, "VPCNET_DATASTORE_TYPE": "etcd"}, DatastoreType.ETCD),
        ({**IN_POD, "VPCNET_DATASTORE_TYPE": "Kubernetes"}, DatastoreType.KUBERNETES),
        ({"VPCNET_DATASTORE_TYPE": "etcdv3"}, DatastoreType.ETCD),
    ],
)
def test_the_datastore_type_defaults_to_kubernetes_in_a_pod(
    environ: dict[str, str], expected: DatastoreType
) -> None:
    assert read_datastore_settings(environ).type is expected


def test_the_kubernetes_datastore_says_where_its_api_is(tmp_path: Path) -> None:
    from vpcnet.datastore.kube_settings import KubeSettings

    assert read_datastore_settings(IN_POD).kube == KubeSettings(None)
    assert read_datastore_settings({}).kube is None
    config = tmp_path / "kc"
    config.write_text("{}")
    env = {"VPCNET_DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(config)}
    assert read_datastore_settings(env).kube == KubeSettings(config)
    with pytest.raises(DatastoreSettingsError, match="VPCNET_DATASTORE_TYPE=kubernetes: no Kubernetes API"):
        read_datastore_settings({"VPCNET_DATASTORE_TYPE": "kubernetes", "HOME": str(tmp_path)})


def test_open_store_opens_either_backend_without_io(tmp_path: Path) -> None:
    import asyncio

    from vpcnet.datastore.kube import KubeResourceStore
    from vpcnet.datastore.kube_settings import KubeSettings
    from vpcnet.datastore.open import open_store
    from vpcnet.datastore.resources import ResourceStore
    from vpcnet.datastore.types import DatastoreError

    config = tmp_path / "kc"
    config.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )

    async def main() -> None:
        etcd = await open_store(DatastoreSettings(endpoints=("http://127.0.0.1:1",)))
        assert isinstance(etcd.store, ResourceStore) and etcd.need_kv("x") is etcd.kv
        await etcd.close()
        kube = await open_store(DatastoreSettings(DatastoreType.KUBERNETES, kube=KubeSettings(config)))
        assert isinstance(kube.store, KubeResourceStore) and kube.kv is None
        with pytest.raises(
            DatastoreError, match=r"the pool IPAM needs the etcd datastore .*it is kubernetes"
        ):
            kube.need_kv("the pool IPAM")
        await kube.close()

    asyncio.run(main())


def test_open_datastore_opens_etcd_without_io() -> None:
    import asyncio

    from vpcnet.datastore.etcd import EtcdDatastore
    from vpcnet.datastore.open import open_datastore

    async def main() -> None:
        store = await open_datastore(DatastoreSettings(endpoints=("http://127.0.0.1:1",)))
        assert isinstance(store, EtcdDatastore)
        await store.close()

    asyncio.run(main())


def test_prefix_range_end() -> None:
    assert prefix_range_end("/a/") == b"/a0"
    assert prefix_range_end("a\xff") == b"b" or prefix_range_end(
        "a\xff"
    )  # non-ASCII encodes to several bytes
    assert prefix_range_end("/vpcnet/v1/") == b"/vpcnet/v10"


def tls_files(tmp: Path) -> dict[str, str]:
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        (tmp / name).write_text("pem")
    return {
        "VPCNET_DATASTORE_CA_CERT_FILE": str(tmp / "ca.pem"),
        "VPCNET_DATASTORE_CERT_FILE": str(tmp / "client.pem"),
        "VPCNET_DATASTORE_KEY_FILE": str(tmp / "client-key.pem"),
    }


def test_tls_files_make_the_endpoints_https(tmp_path: Path) -> None:
    env = {**tls_files(tmp_path), ENDPOINTS_VARIABLE: "10.0.0.1:2379,https://10.0.0.2:2379"}
    settings = read_datastore_settings(env)
    assert settings.tls == EtcdTls(tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client-key.pem")
    etcd = settings.etcd()
    assert [e.tls for e in etcd.endpoints] == [True, True] and etcd.tls == settings.tls
    assert etcd.tls is not None and etcd.tls.read() == (b"pem", b"pem", b"pem")


def test_https_alone_is_tls_with_the_system_roots() -> None:
    etcd = read_datastore_settings({ENDPOINTS_VARIABLE: "https://e:2379"}).etcd()
    assert etcd.tls == EtcdTls() and etcd.endpoints[0].tls


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({ENDPOINTS_VARIABLE: "http://e:2379"}, "http beside TLS certificate files"),
        ({"VPCNET_DATASTORE_KEY_FILE": ""}, "VPCNET_DATASTORE_CERT_FILE is set but VPCNET_DATASTORE_KEY"),
        ({"VPCNET_DATASTORE_CA_CERT_FILE": "/nonexistent/ca.pem"}, "VPCNET_DATASTORE_CA_CERT_FILE='/nonex"),
    ],
)
def test_bad_tls_settings_name_the_variable(tmp_path: Path, change: dict[str, str], message: str) -> None:
    env = {**tls_files(tmp_path), ENDPOINTS_VARIABLE: "https://e:2379", **change}
    with pytest.raises(DatastoreSettingsError, match=message):
        read_datastore_settings(env)


def test_mixed_schemes_are_refused() -> None:
    with pytest.raises(DatastoreSettingsError, match="http and https mixed"):
        read_datastore_settings({ENDPOINTS_VARIABLE: "https://a:1,http://b:2"})
