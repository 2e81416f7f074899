"""Wire a pod as the VPC CNI does, in the node's network namespace.

Pod side: `eth0` (the CNI_IFNAME) with <ip>/32, a scope-link route to 169.254.1.1, the default route via it,
and a permanent neighbour entry 169.254.1.1 -> the host veth's MAC. Host side: a veth named
prefix + sha1("<namespace>.<pod>")[:11] (names.host_veth_name; created with its peer directly in the pod's
namespace: one netlink call, no move), a /32 route to the pod through it, `to <ip> lookup main` at priority
512 and, for an address of a secondary ENI, `from <ip> lookup <ENI table>` at 1536.

An IPv6 pod (the VPC CNI's IPv6 mode) is the same with the other family: <ip>/128 (no DAD: the allocator
made it unique), the default route via fe80::1 with a permanent neighbour entry for it, IPv6 enabled in the
pod, and the host's /128 route and to-rule; the host also pins the pod's address to the pod's MAC (no
neighbour discovery on a veth whose link-local address may still be tentative). Its node-local IPv4
(egress, 169.254.172.0/22) is wired as an IPv4 pod's address is, without rules: the node SNATs it.

The node's netlink sockets stay open for the agent's life: a batched rtnetlink socket for ADD and DEL
(rtnl.py: three sends per ADD) and a pyroute2 AsyncIPRoute for the rest (CHECK). A pod's namespace is new
each time, so its socket is opened per ADD, through setns (see nsenter.py), not pyroute2's forked helper.

The kernel spends ~25 ms destroying a veth, inside the sending syscall: done on the event loop that would
stall every other request. Deleting veths is therefore handed to one reaper thread with its own netlink
socket. That is safe because (1) the pod's routes and rules are removed before DEL answers, so nothing
routes to the old veth any more, and (2) an ADD that needs the same veth name first waits for the
pending deletion of that name.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcnet.dataplane import nsenter, rtnl
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.names import host_veth_name
from vpcnet.ipam.types import PodAddress

log = logging.getLogger("vpcnet.dataplane.podnet")

MAIN_TABLE = 254
TO_POD_PRIORITY = 512
FROM_POD_PRIORITY = 1536
GATEWAY = "169.254.1.1"
GATEWAY6 = "fe80::1"  # the VPC CNI's IPv6 gateway for eth0 (fe80::(i+1))
NUD_PERMANENT = 0x80
IFF_UP = 1
# Set on the host veth before traffic flows, as the VPC CNI does.
HOST_VETH_SYSCTLS = (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0"))


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in raw)


class WiringError(Exception):
    """The kernel refused part of the wiring; everything done so far was undone."""


class PodNamespaceGone(WiringError):
    pass


class NotANetworkNamespace(WiringError):
    """The pod's namespace path names something else (a plain file, a FIFO, another kind of namespace)."""


class HostNetworkNamespace(NotANetworkNamespace):
    """The pod's namespace path names the node's own namespace (or the agent's, or the machine's)."""


@dataclass(frozen=True)
class PodSpec:
    netns: str  # path of the pod's network namespace
    ifname: str  # the pod-side interface (CNI_IFNAME)
    host_veth: str
    address: PodAddress
    route_table: int  # 254 on the primary ENI; the ENI's table otherwise
    mtu: int
    egress_v4: IPv4Address | None = None  # an IPv6 pod's node-local IPv4 (see ipam.types.Assignment)
    address6: IPv6Address | None = None  # a dual-stack pod's IPv6 address (address is its IPv4 one)

    @property
    def addresses(self) -> tuple[PodAddress, ...]:
        return (self.address,) if self.address6 is None else (self.address, self.address6)

    @property
    def family(self) -> IpFamily:
        return IpFamily(self.address.version)


@dataclass(frozen=True)
class WiredPod:
    host_veth: str
    host_mac: str
    pod_mac: str
    host_index: int


class _Reaper:
    """Deletes links by name on one worker thread, with a plain netlink socket in the node's namespace."""

    def __init__(self, node_netns: str | None) -> None:
        self._netlink = rtnl.Rtnl(nsenter.netlink_socket(node_netns))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpcnet-veth-reaper")

    def submit(self, name: str) -> Future[None]:
        return self._pool.submit(self._delete, name)

    def _delete(self, name: str) -> None:
        errors, _ = self._netlink.batch([rtnl.delete_link(name)])
        for error in errors:
            log.warning("deleting veth %s failed: %s", name, error)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._netlink.close()


class PodNetwork:
    """The pod data plane of one node. `open()` before use (in the event loop's thread), `close()` after."""

    def __init__(self, node_netns: str | None = None) -> None:
        self.node_netns = node_netns
        self._node: AsyncIPRoute | None = None
        self._rtnl: rtnl.Rtnl | None = None
        self._reaper: _Reaper | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._ipv6 = os.path.isdir("/proc/sys/net/ipv6")

    async def open(self) -> None:
        self._node = AsyncIPRoute(use_socket=nsenter.netlink_socket(self.node_netns))
        self._rtnl = rtnl.Rtnl(nsenter.netlink_socket(self.node_netns))
        self._reaper = _Reaper(self.node_netns)

    async def close(self) -> None:
        await self.drain()
        if self._node is not None:
            self._node.close()
            self._node = None
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    @property
    def netlink(self) -> rtnl.Rtnl:
        if self._rtnl is None:
            raise RuntimeError("PodNetwork.open() has not been called")
        return self._rtnl

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

    def _create_veth(self, spec: PodSpec, host_mac: str, pod_mac: str) -> rtnl.Link:
        pod_fd = nsenter.open_netns(spec.netns)
        try:
            message = rtnl.new_veth(spec.host_veth, host_mac, spec.ifname, pod_mac, pod_fd, spec.mtu)
            links = self.netlink.run([message])
        finally:
            os.close(pod_fd)
        for link in links:
            if link.name == spec.host_veth:
                return link
        found = self.netlink.find_link(spec.host_veth)
        if found is None:
            raise WiringError(f"veth {spec.host_veth} vanished after creation")
        return found

    def _host_sysctls(self, name: str) -> None:
        if self._ipv6:
            nsenter.write_sysctls(
                [(f"net/ipv6/conf/{name}/{key}", value) for key, value in HOST_VETH_SYSCTLS], self.node_netns
            )

    def _host_side_messages(self, spec: PodSpec, host_index: int) -> list[rtnl.Message]:
        messages = []
        for address in spec.addresses:
            messages += self._address_messages(spec, address, host_index)
        if spec.egress_v4 is not None:
            messages.append(rtnl.replace_route(str(spec.egress_v4), 32, host_index))
        return messages

    def _address_messages(self, spec: PodSpec, address: PodAddress, host_index: int) -> list[rtnl.Message]:
        ip, family = str(address), IpFamily(address.version)
        messages = [
            rtnl.replace_route(ip, family.host_prefixlen, host_index, family=family),
            rtnl.add_rule(TO_POD_PRIORITY, MAIN_TABLE, dst=ip, family=family),
            # A from-rule left by an earlier holder of this address (a DEL that never came) may point at
            # another ENI's table; the first of two rules at one priority would win.
            rtnl.delete_rule(FROM_POD_PRIORITY, 0, src=ip, family=family),
        ]
        if spec.route_table != MAIN_TABLE:
            messages.append(rtnl.add_rule(FROM_POD_PRIORITY, spec.route_table, src=ip, family=family))
        return messages

    def check_netns(self, netns: str) -> None:
        """Refuse a pod namespace path that is missing, not a network namespace, or the node's own: wiring
        there would replace the node's default route. Opens nothing that could block (nsenter.is_netns)."""
        if not os.path.exists(netns):
            raise PodNamespaceGone(f"network namespace {netns} does not exist")
        if not nsenter.is_netns(netns):
            raise NotANetworkNamespace(f"{netns} is not a network namespace")
        if nsenter.is_host_netns(netns, self.node_netns):
            raise HostNetworkNamespace(f"{netns} is the node's own network namespace, not a pod's")

    async def wire(self, spec: PodSpec) -> WiredPod:
        """Make the pod's interface and the host's routes and rules; on failure undo everything and raise."""
        wired = await self.wire_link(spec)
        try:
            host_side = self._host_side_messages(spec, wired.host_index)
            for address in spec.addresses:
                if address.version == 6:
                    host_side.append(
                        rtnl.permanent_neighbour(
                            wired.host_index, str(address), wired.pod_mac, family=IpFamily.V6
                        )
                    )
            self.netlink.run(host_side)
        except BaseException as exc:
            try:
                for address in spec.addresses:
                    self._unwire_host(address, wired.host_index)
            except Exception:
                log.exception("rollback of %s failed", spec.host_veth)
            self.delete_veth_later(spec.host_veth)
            if isinstance(exc, OSError):
                raise WiringError(f"wiring {spec.host_veth} ({spec.address}) failed: {exc}") from exc
            raise
        return wired

    async def wire_link(self, spec: PodSpec) -> WiredPod:
        """The veth and the pod's side of it (address, gateway, default route), nothing on the host's
        side beyond the veth; on failure the veth is deleted again. (`wire` adds the host's routes and
        rules; a branch-ENI pod gets its own, dataplane/branchnet.py.)"""
        await self._wait_pending(spec.host_veth)
        self.check_netns(spec.netns)
        host_mac, pod_mac = random_mac(), random_mac()
        created: rtnl.Link | None = None
        try:
            try:
                created = self._create_veth(spec, host_mac, pod_mac)
            except rtnl.RtnlError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                # A stale veth of this name (pod re-created, ADD retried): the VPC CNI replaces it too.
                log.info("replacing stale veth %s", spec.host_veth)
                await self.delete_veth_later(spec.host_veth)
                created = self._create_veth(spec, host_mac, pod_mac)
            self._host_sysctls(spec.host_veth)
            self._wire_pod_side(spec, created.peer_index, host_mac)
        except BaseException as exc:
            if created is not None:
                self.delete_veth_later(spec.host_veth)
            if isinstance(exc, OSError):
                raise WiringError(f"wiring {spec.host_veth} ({spec.address}) failed: {exc}") from exc
            raise
        return WiredPod(
            host_veth=spec.host_veth, host_mac=host_mac, pod_mac=pod_mac, host_index=created.index
        )

    def _wire_pod_side(self, spec: PodSpec, index: int, host_mac: str) -> None:
        if spec.family is IpFamily.V6 or spec.address6 is not None:  # IPv6 on in the pod (as the VPC CNI)
            nsenter.write_sysctls(
                [(f"net/ipv6/conf/{name}/disable_ipv6", "0") for name in (spec.ifname, "lo")], spec.netns
            )
        pod = rtnl.Rtnl(nsenter.netlink_socket(spec.netns))
        try:
            if not index:
                link = pod.find_link(spec.ifname)
                if link is None:
                    raise WiringError(f"{spec.ifname} is missing in {spec.netns}")
                index = link.index
            messages = [rtnl.set_up(index)]
            if spec.family is IpFamily.V6:
                messages += _pod_side_messages(index, spec.address, GATEWAY6, host_mac, IpFamily.V6)
            if spec.family is IpFamily.V4 or spec.egress_v4 is not None:
                v4 = spec.egress_v4 if spec.egress_v4 is not None else spec.address
                messages += _pod_side_messages(index, v4, GATEWAY, host_mac, IpFamily.V4)
            if spec.address6 is not None:  # dual stack: the IPv6 address and default route beside the IPv4
                messages += _pod_side_messages(index, spec.address6, GATEWAY6, host_mac, IpFamily.V6)
            pod.run(messages)
        finally:
            pod.close()

    def _unwire_host(self, address: PodAddress, host_index: int | None) -> bool:
        """Delete the pod's rules, and its /32 (/128) only through host_index (a new pod may own the address
        by now). True if such a route was there: the veth at host_index carried this address."""
        ip, family = str(address), IpFamily(address.version)
        messages = [
            rtnl.delete_rule(TO_POD_PRIORITY, MAIN_TABLE, dst=ip, family=family),
            # Whatever table it points at (table 0 matches any).
            rtnl.delete_rule(FROM_POD_PRIORITY, 0, src=ip, family=family),
        ]
        if host_index is not None:
            messages.append(
                rtnl.delete_route(ip, family.host_prefixlen, host_index, missing_ok=False, family=family)
            )
        errors, _ = self.netlink.batch(messages)
        routed = host_index is not None
        for error in errors:
            if error.what.startswith("delete route") and error.errno in (errno.ESRCH, errno.ENODEV):
                routed = False
                continue
            raise error
        return routed

    async def unwire(
        self, address: PodAddress, host_veth: str | None, also: tuple[PodAddress, ...] = ()
    ) -> None:
        """Remove the host side of a pod by its address (and veth name, when known): rules and route now,
        the veth by the reaper. Idempotent: what is already gone is skipped. When the veth is gone (its
        namespace was removed) the kernel took the route with it. A veth of that name that does not carry
        this address belongs to a newer pod of the same name (a late DEL of an old sandbox): it stays.
        also: a dual-stack pod's other address, whose rules and route go too."""
        link = self.netlink.find_link(host_veth) if host_veth is not None else None
        for other in also:
            self._unwire_host(other, link.index if link is not None else None)
        routed = self._unwire_host(address, link.index if link is not None else None)
        if routed and host_veth is not None:
            self.delete_veth_later(host_veth)

    async def check(self, spec: PodSpec) -> list[str]:
        """What differs from the wiring ADD makes (empty: all present)."""
        problems: list[str] = []
        ip, family = str(spec.address), spec.family
        plen, gateway = family.host_prefixlen, GATEWAY if family is IpFamily.V4 else GATEWAY6
        try:
            links = await self.node.link("get", ifname=spec.host_veth)
            host_index = int(links[0]["index"])
        except NetlinkError:
            return [f"host veth {spec.host_veth} is missing"]
        routes = [r async for r in await self.node.route("dump", table=MAIN_TABLE, family=family.af)]
        if not any(
            r.get_attr("RTA_DST") == ip and r["dst_len"] == plen and r.get_attr("RTA_OIF") == host_index
            for r in routes
        ):
            problems.append(f"host route {ip}/{plen} dev {spec.host_veth} is missing")
        rules = [r async for r in await self.node.rule("dump", family=family.af)]
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
            if not any(a.get_attr("IFA_ADDRESS") == ip and a["prefixlen"] == plen for a in addrs):
                problems.append(f"{spec.ifname} in the pod lacks {ip}/{plen}")
            pod_routes = [r async for r in await pod.route("dump", table=MAIN_TABLE, family=family.af)]
            if not any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == gateway for r in pod_routes):
                problems.append(f"the pod's default route via {gateway} is missing")
            if spec.address6 is not None and not any(
                a.get_attr("IFA_ADDRESS") == str(spec.address6) and a["prefixlen"] == 128 for a in addrs
            ):
                problems.append(f"{spec.ifname} in the pod lacks {spec.address6}/128")
        finally:
            pod.close()
        return problems


def _pod_side_messages(
    index: int, address: PodAddress, gateway: str, host_mac: str, family: IpFamily
) -> list[rtnl.Message]:
    """The pod's address, a host route to the gateway, the default route via it, the gateway's MAC pinned."""
    return [
        rtnl.add_address(index, address, family=family, nodad=family is IpFamily.V6),
        rtnl.replace_route(gateway, family.host_prefixlen, index, family=family),
        rtnl.replace_route(None, 0, index, gateway=gateway, family=family),
        rtnl.permanent_neighbour(index, gateway, host_mac, family=family),
    ]


def _has_rule(rules: list[Any], attr: str, ip: str, table: int, priority: int) -> bool:
    for rule in rules:
        rule_table = rule.get_attr("FRA_TABLE") or rule["table"]
        if rule.get_attr(attr) == ip and rule_table == table and rule.get_attr("FRA_PRIORITY") == priority:
            return True
    return False


class VethPodExistence:
    """Whether a checkpointed pod still exists, judged as the VPC CNI does on restart
    (normalizeCheckpointDataByPodVethExistence): while its host veth does. Satisfies the VPC address
    manager's PodExistence; `prune()` removes the rules a vanished pod left (PruneStaleAllocations)."""

    def __init__(self, veth_prefix: str = "eni", node_netns: str | None = None) -> None:
        self.veth_prefix = veth_prefix
        self.node_netns = node_netns

    def _netlink(self) -> rtnl.Rtnl:
        return rtnl.Rtnl(nsenter.netlink_socket(self.node_netns))

    async def exists(self, key: object, pod_namespace: str, pod_name: str) -> bool:
        netlink = self._netlink()
        try:
            return netlink.find_link(host_veth_name(self.veth_prefix, pod_namespace, pod_name)) is not None
        finally:
            netlink.close()

    async def prune(self, address: IPv4Address) -> None:
        ip = str(address)
        netlink = self._netlink()
        try:
            netlink.run(
                [
                    rtnl.delete_rule(TO_POD_PRIORITY, MAIN_TABLE, dst=ip),
                    rtnl.delete_rule(FROM_POD_PRIORITY, 0, src=ip),
                ]
            )
        finally:
            netlink.close()
