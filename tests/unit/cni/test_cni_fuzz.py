"""Fuzzing configs and environment through the real shim and the real agent server (the pod data plane is
faked: this is the protocol layer). Whatever comes in: a spec error or a result, never a traceback, and the
server keeps answering."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.cni import shim
from vpcnet.cni.handlers import CniHandler
from vpcnet.cni.memalloc import MemoryAllocator
from vpcnet.cni.server import CniServer
from vpcnet.dataplane.podnet import PodSpec, WiredPod


class FakePodNetwork:
    def __init__(self) -> None:
        self.wired: dict[str, PodSpec] = {}

    async def wire(self, spec: PodSpec) -> WiredPod:
        self.wired[spec.host_veth] = spec
        return WiredPod(spec.host_veth, "02:00:00:00:00:01", "02:00:00:00:00:02", 7)

    async def unwire(self, address: IPv4Address, host_veth: str | None) -> None:
        if host_veth is not None:
            self.wired.pop(host_veth, None)

    def delete_veth_later(self, name: str) -> None:
        self.wired.pop(name, None)

    async def check(self, spec: PodSpec) -> list[str]:
        return [] if spec.host_veth in self.wired else ["missing"]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, MemoryAllocator]]:
    path = tmp_path_factory.mktemp("agent") / "agent.sock"
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 200, 0), ("10.0.2.0/24", 50, 1)])
    handler = CniHandler(lambda: allocator, FakePodNetwork())  # type: ignore[arg-type]
    server = CniServer(path, handler.handle)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield path, allocator
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


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
