"""Wire a pod as the VPC CNI does, in the node's network namespace, with pyroute2.

Pod side: `eth0` (the CNI_IFNAME) with <ip>/32, a scope-link route to 169.254.1.1, the default route via it,
and a permanent neighbour entry 169.254.1.1 -> the host veth's MAC. Host side: a veth named
prefix + sha1("<namespace>.<pod>")[:11] (created with its peer directly in the pod's namespace: one netlink
call, no move), a /32 route to the pod through it, `to <ip> lookup main` at priority 512 and, for an
address of a secondary ENI, `from <ip> lookup <ENI table>` at 1536.

One AsyncIPRoute stays open on the node's namespace for the agent's life. A pod's namespace is new each
time, so its socket is opened per ADD, through setns (see nsenter.py), not pyroute2's forked helper.

The kernel spends ~25 ms destroying a veth, inside the sending syscall: done on the event loop that would
stall every other request. Deleting veths is therefore handed to one reaper thread with its own netlink
socket. That is safe because (1) the pod's routes and rules are removed before DEL answers, so nothing
routes to the old veth any more, and (2) an ADD that needs the same veth name first waits for the
pending deletion of that name.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcnet.dataplane import nsenter

log = logging.getLogger("vpcnet.dataplane.podnet")

MAIN_TABLE = 254
TO_POD_PRIORITY = 512
FROM_POD_PRIORITY = 1536
GATEWAY = "169.254.1.1"
SCOPE_LINK = 253
NUD_PERMANENT = 0x80
IFF_UP = 1
# Set on the host veth before traffic flows, as the VPC CNI does.
HOST_VETH_SYSCTLS = (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0"))


def host_veth_name(prefix: str, namespace: str, pod: str) -> str:
    """The VPC CNI's (and Calico's) host-side name: prefix + first 11 hex of sha1("<namespace>.<pod>")."""
    name = prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]
    if len(name) > 15:
        raise ValueError(f"veth prefix {prefix!r} makes {name!r} longer than 15 characters")
    return name


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in raw)


class WiringError(Exception):
    """The kernel refused part of the wiring; everything done so far was undone."""


class PodNamespaceGone(WiringError):
    pass


@dataclass(frozen=True)
class PodSpec:
    netns: str  # path of the pod's network namespace
    ifname: str  # the pod-side interface (CNI_IFNAME)
    host_veth: str
    address: IPv4Address
    route_table: int  # 254 on the primary ENI; the ENI's table otherwise
    mtu: int


@dataclass(frozen=True)
class WiredPod:
    host_veth: str
    host_mac: str
    pod_mac: str
    host_index: int


def _ignore(*codes: int) -> Callable[[NetlinkError], bool]:
    return lambda exc: exc.code in codes


class _Reaper:
    """Deletes links by name on one worker thread, with a plain netlink socket in the node's namespace."""

    def __init__(self, node_netns: str | None) -> None:
        self._sock = nsenter.netlink_socket(node_netns)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpcnet-veth-reaper")
        self._seq = 0

    def submit(self, name: str) -> Future[None]:
        return self._pool.submit(self._delete, name)

    def _delete(self, name: str) -> None:
        self._seq += 1
        encoded = name.encode() + b"\0"
        attr = struct.pack("HH", 4 + len(encoded), 3) + encoded  # IFLA_IFNAME
        attr += b"\0" * (-len(attr) % 4)
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attr
        header = struct.pack("IHHII", 16 + len(body), 17, 1 | 4, self._seq, 0)  # RTM_DELLINK, REQUEST|ACK
        self._sock.send(header + body)
        while True:
            reply = self._sock.recv(65536)
            _, kind, _, seq, _ = struct.unpack_from("IHHII", reply)
            if seq != self._seq:
                continue
            if kind == 2:  # NLMSG_ERROR: 0 is the ack
                (code,) = struct.unpack_from("i", reply, 16)
                if code not in (0, -errno.ENODEV):
                    log.warning("deleting veth %s failed: %s", name, os.strerror(-code))
            return

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._sock.close()


class PodNetwork:
    """The pod data plane of one node. `open()` before use (in the event loop's thread), `close()` after."""

    def __init__(self, node_netns: str | None = None) -> None:
        self.node_netns = node_netns
        self._node: AsyncIPRoute | None = None
        self._reaper: _Reaper | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._ipv6 = os.path.isdir("/proc/sys/net/ipv6")

    async def open(self) -> None:
        self._node = AsyncIPRoute(use_socket=nsenter.netlink_socket(self.node_netns), nlm_echo=True)
        self._reaper = _Reaper(self.node_netns)

    async def close(self) -> None:
        await self.drain()
        if self._node is not None:
            self._node.close()
            self._node = None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    @property
    def node(self) -> AsyncIPRoute:
        if self._node is None:
            raise RuntimeError("PodNetwork.open() has not been called")
        return self._node

    async def drain(self) -> None:
        """Wait until every veth deletion handed to the reaper is done."""
        pending = list(self._pending.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def delete_veth_later(self, name: str) -> asyncio.Future[None]:
        if self._reaper is None:
            raise RuntimeError("PodNetwork.open() has not been called")
        future = asyncio.wrap_future(self._reaper.submit(name))
        self._pending[name] = future

        def done(f: asyncio.Future[None]) -> None:
            if self._pending.get(name) is f:
                del self._pending[name]

        future.add_done_callback(done)
        return future

    async def _wait_pending(self, name: str) -> None:
        future = self._pending.get(name)
        if future is not None:
            await asyncio.gather(future, return_exceptions=True)

    async def _create_veth(self, spec: PodSpec, host_mac: str, pod_mac: str) -> int:
        pod_fd = nsenter.open_netns(spec.netns)
        try:
            for attempt in (1, 2):
                try:
                    reply = await self.node.link(
                        "add",
                        ifname=spec.host_veth,
                        kind="veth",
                        address=host_mac,
                        mtu=spec.mtu,
                        state="up",
                        peer={
                            "ifname": spec.ifname,
                            "net_ns_fd": pod_fd,
                            "address": pod_mac,
                            "mtu": spec.mtu,
                        },
                    )
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST or attempt == 2:
                        raise
                    # A stale veth of this name (pod re-created, ADD retried): the VPC CNI replaces it too.
                    log.info("replacing stale veth %s", spec.host_veth)
                    await self.delete_veth_later(spec.host_veth)
                    continue
                for msg in reply:
                    if msg.get_attr("IFLA_IFNAME") == spec.host_veth:
                        return int(msg["index"])
                break
        finally:
            os.close(pod_fd)
        links = await self.node.link("get", ifname=spec.host_veth)
        return int(links[0]["index"])

    def _host_sysctls(self, name: str) -> None:
        if not self._ipv6:
            return
        for key, value in HOST_VETH_SYSCTLS:
            try:
                nsenter.write_sysctl(f"net/ipv6/conf/{name}/{key}", value, self.node_netns)
            except FileNotFoundError:
                return  # IPv6 disabled in this namespace

    async def wire(self, spec: PodSpec) -> WiredPod:
        """Make the pod's interface and the host's routes and rules; on failure undo everything and raise."""
        await self._wait_pending(spec.host_veth)
        if not os.path.exists(spec.netns):
            raise PodNamespaceGone(f"network namespace {spec.netns} does not exist")
        undo: list[Callable[[], Awaitable[Any]]] = []
        host_mac, pod_mac = random_mac(), random_mac()
        ip = str(spec.address)
        try:
            host_index = await self._create_veth(spec, host_mac, pod_mac)
            undo.append(lambda: self.delete_veth_later(spec.host_veth))
            self._host_sysctls(spec.host_veth)
            await self._wire_pod_side(spec, host_mac)
            await self.node.route("replace", dst=f"{ip}/32", oif=host_index, scope=SCOPE_LINK)
            undo.append(lambda: self._quiet(self.node.route("del", dst=f"{ip}/32", table=MAIN_TABLE)))
            await self._add_rule(dst=ip, dst_len=32, table=MAIN_TABLE, priority=TO_POD_PRIORITY)
            undo.append(lambda: self._del_to_rule(ip))
            if spec.route_table != MAIN_TABLE:
                await self._add_rule(src=ip, src_len=32, table=spec.route_table, priority=FROM_POD_PRIORITY)
                undo.append(lambda: self._del_from_rules(ip))
        except BaseException as exc:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("rollback step failed for %s", spec.host_veth)
            if isinstance(exc, (NetlinkError, OSError)):
                raise WiringError(f"wiring {spec.host_veth} ({ip}) failed: {exc}") from exc
            raise
        return WiredPod(host_veth=spec.host_veth, host_mac=host_mac, pod_mac=pod_mac, host_index=host_index)

    async def _wire_pod_side(self, spec: PodSpec, host_mac: str) -> None:
        pod = AsyncIPRoute(use_socket=nsenter.netlink_socket(spec.netns))
        try:
            links = await pod.link("get", ifname=spec.ifname)
            index = int(links[0]["index"])
            await pod.link("set", index=index, state="up")
            await pod.addr("add", index=index, address=str(spec.address), prefixlen=32)
            await pod.route("replace", dst=f"{GATEWAY}/32", oif=index, scope=SCOPE_LINK)
            await pod.route("replace", dst="0.0.0.0/0", gateway=GATEWAY, oif=index)
            await pod.neigh("replace", dst=GATEWAY, lladdr=host_mac, ifindex=index, state=NUD_PERMANENT)
        finally:
            pod.close()

    async def _add_rule(self, **rule: Any) -> None:
        try:
            await self.node.rule("add", **rule)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # the same rule for the same address: what we want already
                raise

    async def _quiet(self, request: Awaitable[Any]) -> None:
        try:
            await request
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise

    async def _del_to_rule(self, ip: str) -> None:
        await self._quiet(
            self.node.rule("del", dst=ip, dst_len=32, table=MAIN_TABLE, priority=TO_POD_PRIORITY)
        )

    async def _del_from_rules(self, ip: str) -> None:
        # Whatever table they point at (the VPC CNI loops too: older versions left several).
        for _ in range(8):
            try:
                await self.node.rule("del", src=ip, src_len=32, priority=FROM_POD_PRIORITY)
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.ESRCH):
                    return
                raise

    async def unwire(self, address: IPv4Address, host_veth: str | None) -> None:
        """Remove the host side of a pod by its address (and veth name, when known): rules and route now,
        the veth by the reaper. Idempotent: what is already gone is skipped."""
        ip = str(address)
        await self._del_to_rule(ip)
        await self._del_from_rules(ip)
        if host_veth is not None:
            await self._quiet(self._del_route_via(ip, host_veth))
            self.delete_veth_later(host_veth)
        else:
            await self._quiet(self.node.route("del", dst=f"{ip}/32", table=MAIN_TABLE))

    async def _del_route_via(self, ip: str, host_veth: str) -> None:
        """Delete the /32 only through this pod's veth (a new pod may own the address by now); when the
        veth is gone (its namespace was removed) the kernel took the route with it."""
        try:
            links = await self.node.link("get", ifname=host_veth)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return
            raise
        oif = int(links[0]["index"])
        await self.node.route("del", dst=f"{ip}/32", oif=oif, table=MAIN_TABLE)

    async def check(self, spec: PodSpec) -> list[str]:
        """What differs from the wiring ADD makes (empty: all present)."""
        problems: list[str] = []
        ip = str(spec.address)
        try:
            links = await self.node.link("get", ifname=spec.host_veth)
            host_index = int(links[0]["index"])
        except NetlinkError:
            return [f"host veth {spec.host_veth} is missing"]
        routes = [r async for r in await self.node.route("dump", table=MAIN_TABLE)]
        if not any(
            r.get_attr("RTA_DST") == ip and r["dst_len"] == 32 and r.get_attr("RTA_OIF") == host_index
            for r in routes
        ):
            problems.append(f"host route {ip}/32 dev {spec.host_veth} is missing")
        rules = [r async for r in await self.node.rule("dump")]
        if not _has_rule(rules, "FRA_DST", ip, MAIN_TABLE, TO_POD_PRIORITY):
            problems.append(f"rule to {ip} lookup main prio {TO_POD_PRIORITY} is missing")
        if spec.route_table != MAIN_TABLE and not _has_rule(
            rules, "FRA_SRC", ip, spec.route_table, FROM_POD_PRIORITY
        ):
            problems.append(f"rule from {ip} lookup {spec.route_table} prio {FROM_POD_PRIORITY} is missing")
        if not os.path.exists(spec.netns):
            return [*problems, f"network namespace {spec.netns} is gone"]
        pod = AsyncIPRoute(use_socket=nsenter.netlink_socket(spec.netns))
        try:
            addrs = [a async for a in await pod.addr("dump")]
            if not any(a.get_attr("IFA_ADDRESS") == ip and a["prefixlen"] == 32 for a in addrs):
                problems.append(f"{spec.ifname} in the pod lacks {ip}/32")
            pod_routes = [r async for r in await pod.route("dump", table=MAIN_TABLE)]
            if not any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == GATEWAY for r in pod_routes):
                problems.append(f"the pod's default route via {GATEWAY} is missing")
        finally:
            pod.close()
        return problems


def _has_rule(rules: list[Any], attr: str, ip: str, table: int, priority: int) -> bool:
    for rule in rules:
        rule_table = rule.get_attr("FRA_TABLE") or rule["table"]
        if rule.get_attr(attr) == ip and rule_table == table and rule.get_attr("FRA_PRIORITY") == priority:
            return True
    return False
