"""The lab daemon: the emulated EC2 (with the namespace fabric as its hooks), IMDS and the etcd relay.

Runs in the host namespace (started in the background by `vpcnet lab up`, logging to run_dir/cloudd.log),
but its listening sockets are bound inside the VPC namespace by short-lived threads that setns there:
    10.0.255.254:80      EC2 endpoint (nodes, as the VPC interface endpoint for EC2)
    169.254.169.254:80   IMDS (identifies the calling instance by its source address)
    10.0.255.253:2379    etcd, relayed to the lab's etcd on the host loopback
    10.0.255.252:6443    the lab's Kubernetes API (vpcnet.lab.kubeapi, plain HTTP) over that etcd
    198.51.100.100:80    (in the internet namespace) a web page answering with the caller's address
plus the EC2 endpoint and the Kubernetes API on 127.0.0.1:<free port> in the host namespace for the CLI,
kubectl and tests: a listening
socket, not a link, so the lab stays sealed. Once every socket is bound it writes run_dir/cloudd.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vpcnet.lab import netns
from vpcnet.lab.fabric import INTERNET_HOST_ADDRESS, Fabric
from vpcnet.lab.layout import (
    EC2_ENDPOINT_ADDRESS,
    ETCD_ENDPOINT_ADDRESS,
    IMDS_ADDRESS,
    KUBEAPI_ADDRESS,
    KUBEAPI_PORT,
    LabLayout,
    check_prefix,
)
from vpcnet.lab.tcpproxy import serve_proxy

log = logging.getLogger("vpcnet.lab.cloudd")

ETCD_VPC_PORT = 2379


def bind_tcp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def bind_in_netns(netns_name: str, host: str, port: int) -> socket.socket:
    return netns.run_in_netns(netns_name, lambda: bind_tcp(host, port))


def bind_host_endpoint(port: int) -> socket.socket:
    """The host-side EC2 endpoint: the port it had before a restart if it is still free, else any."""
    if port:
        try:
            return bind_tcp("127.0.0.1", port)
        except OSError:
            log.warning("host port %d is taken; the host-side EC2 endpoint moves", port)
    return bind_tcp("127.0.0.1", 0)


def whoami(request: Any) -> Any:
    """The internet host's web page: the address the request came from (what a site on the internet sees:
    a pod's traffic leaves the VPC SNATed to its node's address)."""
    from vpcnet.lab.ec2.httpserve import Response

    return Response(200, f"{request.client_ip}\n".encode(), "text/plain")


def go_file(layout: LabLayout) -> Path:
    """`lab up` starts the daemon first (its imports take most of a second) and creates this file once the
    EC2 state is written; the daemon waits for it before loading the state."""
    return layout.run_dir / "cloudd.go"


def _wait_for_go(layout: LabLayout, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not go_file(layout).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go_file(layout)} did not appear in {timeout:.0f} s")
        time.sleep(0.01)


# Watches of the lab's API send a bookmark this often: `lab wait` learns from them how far kube-controllers
# has mirrored the API into etcd.
LAB_BOOKMARK_INTERVAL = 0.2


async def start_kube_api(layout: LabLayout, etcd_url: str, host_port: int, vpc_sock: socket.socket) -> Any:
    """The API on the host loopback (its old port if still free) and on the VPC socket; waits for etcd."""
    from vpcnet.datastore.settings import EtcdSettings, read_etcd_tls
    from vpcnet.lab import labetcd
    from vpcnet.lab.kubeapi.httpd import HttpServer
    from vpcnet.lab.kubeapi.server import start

    await asyncio.to_thread(labetcd.wait_healthy, layout, etcd_url)
    # `lab up --etcd-tls`: the lab passes its client certificate in VPCNET_DATASTORE_* (client_tls_env)
    settings = EtcdSettings.from_strings([etcd_url], read_etcd_tls(os.environ))
    try:
        api = await start(settings, "127.0.0.1", host_port, bookmark_interval=LAB_BOOKMARK_INTERVAL)
    except OSError:
        log.warning("host port %d is taken; the host-side Kubernetes API moves", host_port)
        api = await start(settings, "127.0.0.1", 0, bookmark_interval=LAB_BOOKMARK_INTERVAL)
    in_vpc = HttpServer(api.app)
    await in_vpc.listen_on(vpc_sock)
    return api, in_vpc


def serve(
    layout: LabLayout,
    etcd_url: str,
    ec2_host_port: int = 0,
    wait_for_go: bool = False,
    kube_host_port: int = 0,
) -> None:
    from vpcnet.lab.ec2.httpserve import RunningServer, make_server
    from vpcnet.lab.ec2.server import Ec2Service
    from vpcnet.lab.ec2.state import Cloud
    from vpcnet.lab.ec2.wire import service_model
    from vpcnet.lab.imds import ImdsService

    service_model()  # botocore's EC2 model: the slow part of starting, done while `lab up` builds the lab
    from vpcnet.lab.kubeapi import httpd, server  # noqa: F401  (start_kube_api's, loaded before the go too)

    if wait_for_go:
        _wait_for_go(layout)
    fabric = Fabric(layout)
    cloud = Cloud(layout.ec2_state_file)
    fabric.set_subnet_lookup(lambda sid: cloud.subnet(sid).cidr)
    fabric.set_subnet6_lookup(lambda sid: cloud.subnet(sid).ipv6_cidr)
    # The kernel may have drifted from the state (a daemon restart, a veth deleted by hand): repair it
    # before answering anything, then follow every change through the hooks.
    fabric.reconcile_cloud(cloud.enis(), cloud.instances(), cloud.security_groups())
    cloud.hooks = fabric
    log.info("state %s loaded and reconciled: %d ENIs plugged", layout.ec2_state_file, len(fabric.plugged()))

    vpc = layout.vpc_netns
    ec2 = Ec2Service(cloud)
    servers = [
        RunningServer(ec2.make_server(bind_in_netns(vpc, EC2_ENDPOINT_ADDRESS, 80))),
        RunningServer(ec2.make_server(bind_host_endpoint(ec2_host_port))),
    ]
    servers += [
        RunningServer(ImdsService(cloud).make_server(bind_in_netns(vpc, IMDS_ADDRESS, 80))),
        RunningServer(make_server(whoami, bind_in_netns(layout.internet_netns, INTERNET_HOST_ADDRESS, 80))),
    ]
    etcd_sock = bind_in_netns(vpc, ETCD_ENDPOINT_ADDRESS, ETCD_VPC_PORT)
    kube_sock = bind_in_netns(vpc, KUBEAPI_ADDRESS, KUBEAPI_PORT)
    upstream = urlsplit(etcd_url)
    if upstream.hostname is None or upstream.port is None:
        raise ValueError(f"--etcd {etcd_url!r} must be a URL with host and port")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        proxy = await serve_proxy(etcd_sock, upstream.hostname or "", upstream.port or 0)
        api, api_in_vpc = await start_kube_api(layout, etcd_url, kube_host_port, kube_sock)
        ready = {
            "pid": os.getpid(),
            "ec2_host": servers[1].url,
            "ec2": f"http://{EC2_ENDPOINT_ADDRESS}",
            "imds": f"http://{IMDS_ADDRESS}",
            "etcd": f"{upstream.scheme}://{ETCD_ENDPOINT_ADDRESS}:{ETCD_VPC_PORT}",
            "etcd_upstream": etcd_url,
            "internet_http": f"http://{INTERNET_HOST_ADDRESS}",
            "kubeapi_host": api.url,
            "kubeapi": f"http://{KUBEAPI_ADDRESS}:{KUBEAPI_PORT}",
        }
        ready_file = layout.run_dir / "cloudd.json"
        tmp = ready_file.with_name(".cloudd.json.tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n")
        os.replace(tmp, ready_file)
        log.info("ready: %s", ready)
        await stop.wait()
        log.info("stopping")
        proxy.close()
        await api_in_vpc.close()
        await api.close()

    try:
        asyncio.run(run())
    finally:
        for s in servers:
            threading.Thread(target=s.close, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpcnet.lab.cloudd", description=__doc__)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--etcd", required=True, help="the lab etcd's client URL on the host")
    parser.add_argument("--ec2-host-port", type=int, default=0, help="port of the host-side EC2 endpoint")
    parser.add_argument("--kube-host-port", type=int, default=0, help="port of the host-side Kubernetes API")
    parser.add_argument(
        "--wait-for-go", action="store_true", help="load the state once run_dir/cloudd.go exists"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    layout = LabLayout(check_prefix(args.prefix))
    try:
        serve(layout, args.etcd, args.ec2_host_port, args.wait_for_go, args.kube_host_port)
    except Exception:
        log.exception("lab daemon failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
