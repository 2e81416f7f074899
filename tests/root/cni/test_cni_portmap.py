"""Chaining with Debian's containernetworking-plugins: a hostPort through portmap reaches the pod."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from cnichain import Attachment, add, delete
from cnienv import NODE_IP, Node, sh

from vpcnet.cni.install import conflist

pytestmark = pytest.mark.root


def test_host_port_reaches_the_pod(node: Node) -> None:
    pod_ns = node.new_pod_netns()
    chain = conflist(mtu=1500)
    assert [p["type"] for p in chain["plugins"]] == ["vpcnet-cni", "portmap"]
    att = Attachment(
        container_id="cweb",
        netns=f"/run/netns/{pod_ns}",
        args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web"},
        capabilities={"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]},
        run_in=node.netns,
    )
    bin_dirs = [str(node.bin_dir), "/usr/lib/cni"]
    result = asyncio.run(add(chain, att, bin_dirs))
    pod_ip = result["ips"][0]["address"].split("/")[0]
    assert "CNI-HOSTPORT-DNAT" in sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat")
    server = subprocess.Popen(
        [
            "ip", "netns", "exec", pod_ns, "python3", "-c",
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', 8080)); s.listen(1); print('ready', flush=True)\n"
            "c, a = s.accept(); c.sendall(('hello from pod, you are ' + a[0]).encode()); c.close()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # From outside the node (the VPC namespace), to the node's address and the host port.
        client = (
            "import socket\nc=socket.create_connection(('" + NODE_IP + "', 18080), timeout=5)\n"
            "print(c.recv(100).decode())"
        )
        out = sh("ip", "netns", "exec", node.vpc, "python3", "-c", client)
        assert out.startswith("hello from pod"), out
        assert pod_ip != NODE_IP
    finally:
        server.kill()
        server.wait()
    asyncio.run(delete(chain, att, bin_dirs, result))
    node.drain()
    nat = sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat")
    assert "18080" not in nat
    assert node.allocator.assigned == {}
