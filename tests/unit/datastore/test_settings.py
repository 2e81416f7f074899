from __future__ import annotations

import pytest

from vpcnet.datastore.settings import ENDPOINTS_ENV, Endpoint, EtcdSettings, parse_endpoint
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
    settings = EtcdSettings.from_env({ENDPOINTS_ENV: "http://a:1, b:2 ,"})
    assert settings.endpoints == (Endpoint("a", 1), Endpoint("b", 2))
    assert EtcdSettings.from_env({}).endpoints == (Endpoint("127.0.0.1", 2379),)
    with pytest.raises(ValueError, match="empty"):
        EtcdSettings.from_env({ENDPOINTS_ENV: " , "})


def test_prefix_range_end() -> None:
    assert prefix_range_end("/a/") == b"/a0"
    assert prefix_range_end("a\xff") == b"b" or prefix_range_end(
        "a\xff"
    )  # non-ASCII encodes to several bytes
    assert prefix_range_end("/vpcnet/v1/") == b"/vpcnet/v10"
