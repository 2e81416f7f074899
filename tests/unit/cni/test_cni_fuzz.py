"""Fuzzing configs and environment through the real shim and the real agent server (the pod data plane is
faked: this is the protocol layer). Whatever comes in: a spec error or a result, never a traceback, and the
server keeps answering."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.cni import shim
from vpcnet.testing.memalloc import MemoryAllocator

ENV_KEYS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"]
text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=40)
env_values = st.one_of(
    st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "c1", "eth0", "/run/netns/x", ""]),
    text,
    st.just("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "cniVersion": st.sampled_from(["0.4.0", "1.0.0", "1.1.0", "0.3.1", ""]) | json_values,
        "name": st.sampled_from(["vpcnet", "x"]) | json_values,
        "type": st.just("vpcnet-cni") | json_values,
        "mtu": st.sampled_from([1500, 9001, 0]) | json_values,
        "vethPrefix": st.sampled_from(["eni", "eth", "abcde"]) | json_values,
        "prevResult": json_values,
        "cni.dev/valid-attachments": json_values,
    },
)
stdins = st.one_of(configs.map(lambda c: json.dumps(c).encode()), st.binary(max_size=64))


def check_answer(code: int, out: bytes) -> None:
    if code == 0:
        assert out == b"" or isinstance(json.loads(out), dict)
        return
    body = json.loads(out)
    assert isinstance(body["code"], int) and body["code"] > 0
    assert isinstance(body["msg"], str) and body["msg"]
    assert "Traceback" not in out.decode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(st.sampled_from(ENV_KEYS), env_values), stdin=stdins)
def test_fuzz_through_shim_and_server(
    agent: tuple[Path, MemoryAllocator], env: dict[str, str], stdin: bytes
) -> None:
    path, _ = agent
    code, out = shim.run({k.encode(): v.encode() for k, v in env.items()}, stdin, str(path))
    check_answer(code, out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_fuzz_raw_socket_bytes(agent: tuple[Path, MemoryAllocator], data: bytes) -> None:
    """Bytes that did not come from the shim at all still get a spec error."""
    path, _ = agent
    answer = shim.ask_agent(str(path), data, timeout=10)
    head, _, body = answer.partition(b"\n")
    assert head.isdigit()
    check_answer(int(head), body)


def test_server_alive_and_consistent_after_fuzzing(agent: tuple[Path, MemoryAllocator]) -> None:
    path, _ = agent
    conf = json.dumps({"cniVersion": "1.1.0", "name": "vpcnet", "type": "vpcnet-cni"}).encode()
    code, out = shim.run({b"CNI_COMMAND": b"STATUS"}, conf, str(path))
    assert (code, out) == (0, b"")
    env = {
        b"CNI_COMMAND": b"ADD",
        b"CNI_CONTAINERID": b"final",
        b"CNI_NETNS": b"/run/netns/x",
        b"CNI_IFNAME": b"eth0",
    }
    code, out = shim.run(env, conf, str(path))
    assert code == 0, out
    first = json.loads(out)["ips"][0]["address"]
    code, out = shim.run(env, conf, str(path))  # the same key again: the same address
    assert json.loads(out)["ips"][0]["address"] == first
    code, _ = shim.run({**env, b"CNI_COMMAND": b"DEL"}, conf, str(path))
    assert code == 0
    code, _ = shim.run({**env, b"CNI_COMMAND": b"DEL"}, conf, str(path))  # idempotent
    assert code == 0


@settings(max_examples=400, deadline=None)
@given(env=st.dictionaries(st.sampled_from(ENV_KEYS), env_values), stdin=stdins)
def test_fuzz_agent_down_codes_are_the_agents(env: dict[str, str], stdin: bytes) -> None:
    """With the agent down the shim answers a malformed request with the code the agent would give it
    (4, 6, 7 or 1); only a valid request gets 11 (50 for STATUS). VERSION is the shim's own."""
    from vpcnet.cni.spec import CniError, parse_request

    raw = {k.encode(): v.encode() for k, v in env.items()}
    code, out = shim.run(raw, stdin, "/nonexistent/vpcnet.sock")
    check_answer(code, out)
    if env.get("CNI_COMMAND") == "VERSION":
        return
    try:
        parse_request(shim.encode_request(raw, stdin))
    except CniError as err:
        expected = err.code
    else:
        expected = shim.ERR_NOT_AVAILABLE if env.get("CNI_COMMAND") == "STATUS" else shim.ERR_TRY_AGAIN_LATER
    assert code == 1 and json.loads(out)["code"] == expected, (env, stdin, out)
