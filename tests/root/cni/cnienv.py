"""A node of our own for CNI root tests: namespaces with a unique prefix, the CNI service on its own event
loop thread (as in the agent), the launcher installed in a temporary bin dir, and a way to run it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import subprocess
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from vpcnet.cni.handlers import CniSettings
from vpcnet.cni.install import install_binary, install_native
from vpcnet.cni.service import CniService
from vpcnet.dataplane.hostnet import HostNetConfig
from vpcnet.testing.memalloc import MemoryAllocator

T = TypeVar("T")

NODE_IP = "10.0.1.5"
VPC_ROUTER = "10.0.1.1"
ENI_TABLE = 2  # device 1
INTERNET_IP = "198.51.100.1"  # TEST-NET-2, standing for the internet behind the VPC router


def unique_prefix() -> str:
    return "vt" + "".join(random.choices(string.ascii_lowercase, k=4))


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


class LoopThread:
    """An asyncio loop on a thread of its own, like the agent's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Node:
    """Namespaces {prefix}node (the node) and {prefix}vpc (the VPC router, also holding the internet
    address), joined by the node's eth0; pods are {prefix}p<N>."""

    prefix: str
    tmp: Path
    allocator: MemoryAllocator = field(
        default_factory=lambda: MemoryAllocator.from_ranges([("10.0.1.0/24", 4, 0), ("10.0.2.0/24", 4, 1)])
    )
    pods: list[str] = field(default_factory=list)
    service: CniService | None = None
    loop: LoopThread = field(default_factory=LoopThread)
    native: bool = False  # the compiled fast-path client instead of the Python launcher

    @property
    def netns(self) -> str:
        return f"{self.prefix}node"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def vpc(self) -> str:
        return f"{self.prefix}vpc"

    @property
    def socket(self) -> Path:
        return self.tmp / "agent.sock"

    @property
    def bin_dir(self) -> Path:
        return self.tmp / "bin"

    def host_config(self) -> HostNetConfig:
        return HostNetConfig(
            primary_ip=IPv4Address(NODE_IP),
            vpc_cidrs=(IPv4Network("10.0.0.0/16"),),
            excluded_snat_cidrs=(IPv4Network("10.99.0.0/16"),),
        )

    def up(self) -> None:
        sh("ip", "netns", "add", self.netns)
        sh("ip", "netns", "add", self.vpc)
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        sh("ip", "-n", self.vpc, "link", "set", "lo", "up")
        sh(
            "ip", "-n", self.netns, "link", "add", "eth0", "type", "veth",
            "peer", "name", f"{self.prefix}r", "netns", self.vpc,
        )  # fmt: skip
        sh("ip", "-n", self.netns, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.netns, "route", "add", "default", "via", VPC_ROUTER)
        # The secondary ENI's table (in EC2 the ENI has its own interface; here eth0 stands in for it).
        sh("ip", "-n", self.netns, "route", "add", "default", "via", VPC_ROUTER, "table", str(ENI_TABLE))
        sh("ip", "-n", self.vpc, "addr", "add", f"{VPC_ROUTER}/24", "dev", f"{self.prefix}r")
        sh("ip", "-n", self.vpc, "addr", "add", f"{INTERNET_IP}/24", "dev", "lo")
        sh("ip", "-n", self.vpc, "link", "set", f"{self.prefix}r", "up")
        # Pods' addresses are routed to the node (in EC2 the VPC does this for the ENIs' addresses).
        sh("ip", "-n", self.vpc, "route", "add", "10.0.2.0/24", "via", NODE_IP)
        if self.native:
            install_native(self.bin_dir, str(self.socket))
        else:
            install_binary(self.bin_dir, str(self.socket))
        self.start()

    def start(self) -> None:
        self.service = CniService(
            self.socket,
            lambda: self.allocator,
            CniSettings(veth_prefix="eni", mtu=1500),
            host=self.host_config,
            node_netns=self.netns_path,
        )
        self.loop.run(self.service.start())

    def stop(self) -> None:
        if self.service is not None:
            self.loop.run(self.service.stop())
            self.service = None

    def drain(self) -> None:
        assert self.service is not None
        self.loop.run(self.service.podnet.drain())

    def down(self) -> None:
        try:
            self.stop()
        finally:
            self.loop.close()
            for name in [*self.pods, self.netns, self.vpc]:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def new_pod_netns(self) -> str:
        name = f"{self.prefix}p{len(self.pods)}"
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return name

    def cni(
        self,
        command: str,
        container_id: str,
        netns: str,
        pod: str,
        *,
        namespace: str = "default",
        conf: dict[str, Any] | None = None,
        ifname: str = "eth0",
    ) -> tuple[int, dict[str, Any] | None]:
        """Run the installed vpcnet-cni exactly as a runtime does (in the node's namespace)."""
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{netns}" if netns else "",
            "CNI_IFNAME": ifname,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
            "CNI_PATH": str(self.bin_dir),
            "PATH": os.environ.get("PATH", ""),
        }
        body = conf or {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, str(self.bin_dir / "vpcnet-cni")],
            input=json.dumps(body).encode(),
            env=env,
            capture_output=True,
            check=False,
        )
        assert proc.stderr == b"", proc.stderr
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, out
