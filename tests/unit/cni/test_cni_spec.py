"""The CNI request as the agent parses it: environment, config, errors and results."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address

import pytest

from vpcnet.cni import spec
from vpcnet.cni.shim import encode_request
from vpcnet.cni.spec import CniError, Interface, add_result, parse_config, parse_env, parse_request
from vpcnet.dataplane.podnet import random_mac

BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/p1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
    "K8S_POD_INFRA_CONTAINER_ID=abc123",
    "CNI_PATH": "/opt/cni/bin",
}
CONF = {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}


def env_with(**changes: str | None) -> dict[str, str]:
    env = dict(BASE_ENV)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def code_of(fn: object, *args: object) -> int:
    with pytest.raises(CniError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code


def test_env_parsed_with_pod_identity() -> None:
    env = parse_env(BASE_ENV)
    assert (env.command, env.container_id, env.netns, env.ifname) == (
        "ADD",
        "abc123",
        "/run/netns/p1",
        "eth0",
    )
    assert (env.pod_namespace, env.pod_name) == ("default", "web")


def test_pod_identity_defaults_without_kubernetes_args() -> None:
    env = parse_env(env_with(CNI_ARGS=None))
    assert (env.pod_namespace, env.pod_name) == ("default", "abc123")


@pytest.mark.parametrize(
    "changes",
    [
        {"CNI_COMMAND": "FROB"},
        {"CNI_COMMAND": None},
        {"CNI_CONTAINERID": None},
        {"CNI_CONTAINERID": "-bad"},
        {"CNI_CONTAINERID": "a b"},
        {"CNI_NETNS": None},
        {"CNI_NETNS": "relative/path"},
        {"CNI_IFNAME": None},
        {"CNI_IFNAME": "x" * 16},
        {"CNI_IFNAME": "a/b"},
        {"CNI_IFNAME": ".."},
        {"CNI_ARGS": "K8S_POD_NAME"},
        {"CNI_ARGS": "K8S_POD_NAME=Not_A_Name"},
    ],
)
def test_bad_environment_is_error_4(changes: dict[str, str | None]) -> None:
    assert code_of(parse_env, env_with(**changes)) == spec.ERR_INVALID_ENV


def test_del_needs_no_netns() -> None:
    env = parse_env(env_with(CNI_COMMAND="DEL", CNI_NETNS=None))
    assert env.netns == ""


def test_status_and_gc_need_no_container() -> None:
    for command in ("STATUS", "GC"):
        env = parse_env({"CNI_COMMAND": command})
        assert env.command == command


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_supported_versions(version: str) -> None:
    assert parse_config(json.dumps({**CONF, "cniVersion": version}).encode(), "ADD").cni_version == version


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", spec.ERR_DECODE),
        (b"{not json", spec.ERR_DECODE),
        (b"[1, 2]", spec.ERR_DECODE),
        (json.dumps({**CONF, "cniVersion": "0.3.1"}).encode(), spec.ERR_INCOMPATIBLE_VERSION),
        (json.dumps({**CONF, "cniVersion": 1}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "name": ""}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "name": "bad name"}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "type": 3}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "mtu": 100}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "mtu": True}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "vethPrefix": "eth"}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "vethPrefix": "toolong"}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "prevResult": []}).encode(), spec.ERR_INVALID_CONFIG),
        (json.dumps({**CONF, "prevResult": {"ips": [1]}}).encode(), spec.ERR_INVALID_CONFIG),
    ],
)
def test_bad_config_codes(data: bytes, code: int) -> None:
    assert code_of(parse_config, data, "ADD") == code


def test_status_and_gc_need_version_1_1() -> None:
    assert code_of(parse_config, json.dumps(CONF).encode(), "STATUS") == spec.ERR_INCOMPATIBLE_VERSION
    conf = {**CONF, "cniVersion": "1.1.0", spec.VALID_ATTACHMENTS: [{"containerID": "a", "ifname": "eth0"}]}
    assert parse_config(json.dumps(conf).encode(), "GC").valid_attachments == (("a", "eth0"),)
    bad = {**conf, spec.VALID_ATTACHMENTS: [{"containerID": 1}]}
    assert code_of(parse_config, json.dumps(bad).encode(), "GC") == spec.ERR_INVALID_CONFIG


def test_wire_round_trip_keeps_only_cni_variables() -> None:
    raw = {k.encode(): v.encode() for k, v in BASE_ENV.items()}
    raw[b"HOME"] = b"/root"
    request = parse_request(encode_request(raw, json.dumps(CONF).encode()))
    assert request.env.container_id == "abc123"
    assert request.conf.name == "vpcnet"
    env, _ = spec.decode_wire(encode_request(raw, b"{}"))
    assert "HOME" not in env


def test_wire_garbage_is_decode_error() -> None:
    assert code_of(spec.decode_wire, b"GET / HTTP/1.0\r\n\r\n") == spec.ERR_DECODE
    assert code_of(spec.decode_wire, b"VPCNET-CNI/1\nCNI_COMMAND=ADD") == spec.ERR_DECODE
    assert code_of(spec.decode_wire, b"VPCNET-CNI/1\n\xff=1\0\0{}") == spec.ERR_INVALID_ENV


def test_error_json_shape() -> None:
    err = CniError(7, "name must be set", "field name")
    assert err.to_json("1.0.0") == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "name must be set",
        "details": "field name",
    }
    head, _, body = spec.error_answer(err, "1.0.0").partition(b"\n")
    assert head == b"1"
    assert json.loads(body)["code"] == 7


def test_add_result_1_0() -> None:
    result = add_result(
        "1.0.0",
        [
            Interface("eni68caf03a5f4", "02:00:00:00:00:01"),
            Interface("eth0", "02:00:00:00:00:02", "/run/netns/p"),
        ],
        IPv4Address("10.0.1.10"),
    )
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "eni68caf03a5f4", "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"},
        ],
        "ips": [{"address": "10.0.1.10/32", "gateway": "169.254.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {},
    }


def test_add_result_0_4_has_ip_version_and_appends_to_prev() -> None:
    prev = {"interfaces": [{"name": "x"}], "ips": [], "routes": []}
    result = add_result(
        "0.4.0", [Interface("h", "m1"), Interface("eth0", "m2", "/ns")], IPv4Address("10.0.0.9"), prev
    )
    assert result["ips"] == [
        {"version": "4", "address": "10.0.0.9/32", "gateway": "169.254.1.1", "interface": 2}
    ]
    assert [i["name"] for i in result["interfaces"]] == ["x", "h", "eth0"]


def test_prev_result_addresses() -> None:
    prev = {
        "ips": [
            {"address": "10.0.0.9/32"},
            {"address": "fe80::1/64"},
            {"address": 5},
            {"address": "2001:db8::7/128"},
        ]
    }
    assert spec.prev_result_addresses(prev) == [IPv4Address("10.0.0.9"), IPv6Address("2001:db8::7")]


def test_add_result_of_an_ipv6_pod() -> None:
    result = add_result(
        "0.4.0", [Interface("h", "m1"), Interface("eth0", "m2", "/ns")], IPv6Address("2001:db8::7")
    )
    assert result["ips"] == [
        {"version": "6", "address": "2001:db8::7/128", "gateway": "fe80::1", "interface": 1}
    ]
    assert result["routes"] == [{"dst": "::/0", "gw": "fe80::1"}]


def test_random_mac_is_local_unicast() -> None:
    for _ in range(50):
        first = int(random_mac().split(":")[0], 16)
        assert first & 0x02 and not first & 0x01


def test_config_version_for_errors() -> None:
    raw = {b"CNI_COMMAND": b"ADD"}
    assert spec.config_version(encode_request(raw, b'{"cniVersion": "0.4.0"}')) == "0.4.0"
    assert spec.config_version(encode_request(raw, b'{"cniVersion": "9"}')) == "1.1.0"
    assert spec.config_version(encode_request(raw, b"[]")) == "1.1.0"
    assert spec.config_version(b"junk") == "1.1.0"
