from __future__ import annotations

import logging

import pytest

from vpcnet.datastore.settings import (
    DEPRECATED_ENDPOINTS_VARIABLE,
    ENDPOINTS_VARIABLE,
    DatastoreSettings,
    DatastoreSettingsError,
    DatastoreType,
    Endpoint,
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
        ("https://a:1", "scheme 'https'"),
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


@pytest.mark.parametrize("value", ["kubernetes", "etcdv3", "zookeeper"])
def test_an_unknown_datastore_type_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(
        DatastoreSettingsError, match=f"VPCNET_DATASTORE_TYPE='{value}': expected one of etcd"
    ):
        read_datastore_settings({"VPCNET_DATASTORE_TYPE": value})
    assert read_datastore_settings({"VPCNET_DATASTORE_TYPE": "ETCD"}).type is DatastoreType.ETCD


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
