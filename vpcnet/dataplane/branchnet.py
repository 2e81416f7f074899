"""Wire a pod onto its branch ENI (security groups for pods), as the VPC CNI does.

The pod's side is a normal pod's (dataplane/podnet.py: veth, <ip>/32, default via 169.254.1.1); its address
is the branch ENI's. The node reaches the branch through `vlan.eth.<VLAN id>` (on EKS a VLAN device on the
trunk's interface, which the VPC CNI creates; in the lab a device the VPC fabric puts in the node when the
branch is associated, see vpcnet/lab/fabric.py), set up here, and a route table of the pod's own,
VLAN id + 100: the subnet's gateway on the device, the default route via it, the pod's /32 via its veth.

POD_SECURITY_GROUP_ENFORCING_MODE:
- strict (the VPC CNI's default): rules by incoming interface at priority 10, from the device and from the
  pod's veth to the pod's table. Everything the pod sends or receives crosses the VPC and so its groups,
  even traffic from its own node (the node has no route to the pod). The host veth's prefix is `vlan`, so
  the node's network policy (dispatch by prefix) does not apply, nor does SNAT (it skips `vlan+`).
- standard: rules by address, as for a pod on a secondary ENI: `to <ip> lookup main` at 512 (the node
  reaches the pod directly), `from <ip> lookup <table>` at 1536. The host veth has the normal prefix, so
  network policy applies as well as the branch's groups.

What the VPC CNI also does and this does not: in strict mode it moves the local table's rule from 0 to 20,
so that a strict pod's packets to the node's own addresses go out through the VPC too; here they are
delivered locally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vpcnet.dataplane import nsenter
from vpcnet.dataplane.podnet import (
    FROM_POD_PRIORITY,
    MAIN_TABLE,
    TO_POD_PRIORITY,
    PodNetwork,
    PodSpec,
    WiredPod,
    WiringError,
)

log = logging.getLogger(__name__)

VLAN_RULE_PRIORITY = 10  # the VPC CNI's priority for a strict branch pod's iif rules
TABLE_OFFSET = 100  # a branch pod's table: VLAN id + 100
STRICT, STANDARD = "strict", "standard"
ENFORCING_MODES = (STRICT, STANDARD)
STRICT_VETH_PREFIX = "vlan"  # the VPC CNI's host veth prefix for strict branch pods
RT_SCOPE_LINK = 253
ESRCH, ENOENT = 3, 2


def vlan_ifname(vlan_id: int) -> str:
    """The node's device of a branch: the name the VPC CNI gives it."""
    return f"vlan.eth.{vlan_id}"


def route_table(vlan_id: int) -> int:
    return vlan_id + TABLE_OFFSET


@dataclass(frozen=True)
class BranchSpec:
    pod: PodSpec  # address = the branch's private IP
    vlan_id: int
    subnet_cidr: IPv4Network
    mode: str  # strict | standard

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet_cidr.network_address + 1

    @property
    def table(self) -> int:
        return route_table(self.vlan_id)


class BranchNetwork:
    """Branch-ENI pods on one node, over the node's PodNetwork (its netlink sockets and veth reaper)."""

    def __init__(self, podnet: PodNetwork) -> None:
        self.podnet = podnet

    async def _vlan_index(self, vlan_id: int) -> int:
        name = vlan_ifname(vlan_id)
        try:
            links = await self.podnet.node.link("get", ifname=name)
        except NetlinkError as exc:
            raise WiringError(
                f"{name} is not on the node (is the branch associated with its trunk?)"
            ) from exc
        return int(links[0]["index"])

    async def wire(self, spec: BranchSpec) -> WiredPod:
        """The pod's veth, the vlan device up, the pod's table and rules; all undone on failure."""
        if spec.mode not in ENFORCING_MODES:
            raise WiringError(f"POD_SECURITY_GROUP_ENFORCING_MODE={spec.mode!r}: expected strict or standard")
        vlan_index = await self._vlan_index(spec.vlan_id)
        wired = await self.podnet.wire_link(spec.pod)
        try:
            await self._wire_host(spec, vlan_index, wired.host_index)
        except BaseException as exc:
            await self.unwire(spec, wired.host_veth)
            if isinstance(exc, NetlinkError | OSError):
                raise WiringError(
                    f"wiring branch pod {spec.pod.address} (VLAN {spec.vlan_id}): {exc}"
                ) from exc
            raise
        return wired

    async def _wire_host(self, spec: BranchSpec, vlan_index: int, veth_index: int) -> None:
        ipr, table, ip = self.podnet.node, spec.table, str(spec.pod.address)
        # Loose reverse-path check on the device: replies to the pod come in here, while the node's main
        # table reaches their sources through its own interfaces.
        nsenter.write_sysctls(
            [(f"net/ipv4/conf/{vlan_ifname(spec.vlan_id)}/rp_filter", "2")], self.podnet.node_netns
        )
        await ipr.link("set", index=vlan_index, state="up")
        gateway = str(spec.gateway)
        await ipr.route("replace", dst=f"{gateway}/32", oif=vlan_index, scope=RT_SCOPE_LINK, table=table)
        await ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=vlan_index, table=table)
        await ipr.route("replace", dst=f"{ip}/32", oif=veth_index, scope=RT_SCOPE_LINK, table=table)
        if spec.mode == STRICT:
            for name in (vlan_ifname(spec.vlan_id), spec.pod.host_veth):
                await _add_rule(ipr, iifname=name, table=table, priority=VLAN_RULE_PRIORITY)
        else:
            await ipr.route("replace", dst=f"{ip}/32", oif=veth_index, scope=RT_SCOPE_LINK, table=MAIN_TABLE)
            await _add_rule(ipr, dst=ip, dst_len=32, table=MAIN_TABLE, priority=TO_POD_PRIORITY)
            await _add_rule(ipr, src=ip, src_len=32, table=table, priority=FROM_POD_PRIORITY)

    async def unwire(self, spec: BranchSpec, host_veth: str | None) -> None:
        """Rules, the pod's table and its veth; idempotent. The vlan device stays: it is the branch's, and
        goes when the branch is disassociated (in the lab, the fabric removes it)."""
        ipr, table, ip = self.podnet.node, spec.table, str(spec.pod.address)
        for name in (vlan_ifname(spec.vlan_id), spec.pod.host_veth):
            await _del_rule(ipr, iifname=name, table=table, priority=VLAN_RULE_PRIORITY)
        await _del_rule(ipr, dst=ip, dst_len=32, table=MAIN_TABLE, priority=TO_POD_PRIORITY)
        await _del_rule(ipr, src=ip, src_len=32, table=table, priority=FROM_POD_PRIORITY)
        try:
            routes = [r async for r in await ipr.route("dump", table=table)]
        except NetlinkError:
            routes = []
        for route in routes:
            if (route.get_attr("RTA_TABLE") or route["table"]) != table:
                continue
            try:
                await ipr.route(
                    "del",
                    table=table,
                    dst=_route_dst(route),
                    oif=route.get_attr("RTA_OIF"),
                    scope=route["scope"],
                )
            except NetlinkError as exc:
                if exc.code not in (ESRCH, ENOENT):
                    raise
        if host_veth is not None and self.podnet.netlink.find_link(host_veth) is not None:
            self.podnet.delete_veth_later(host_veth)

    async def check(self, spec: BranchSpec) -> list[str]:
        """What differs from what ADD made (empty: all present)."""
        problems = []
        ipr = self.podnet.node
        try:
            await ipr.link("get", ifname=spec.pod.host_veth)
        except NetlinkError:
            problems.append(f"host veth {spec.pod.host_veth} is missing")
        routes = [r async for r in await ipr.route("dump", table=spec.table)]
        if not any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == str(spec.gateway) for r in routes):
            problems.append(f"table {spec.table} has no default route via {spec.gateway}")
        if not any(r.get_attr("RTA_DST") == str(spec.pod.address) and r["dst_len"] == 32 for r in routes):
            problems.append(f"table {spec.table} has no route to {spec.pod.address}")
        return problems


def _route_dst(route: Any) -> str:
    dst = route.get_attr("RTA_DST")
    return f"{dst}/{route['dst_len']}" if dst else "0.0.0.0/0"


async def _add_rule(ipr: Any, **match: Any) -> None:
    try:
        await ipr.rule("add", **match)
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: the rule we want is there
            raise


async def _del_rule(ipr: Any, **match: Any) -> None:
    try:
        await ipr.rule("del", **match)
    except NetlinkError as exc:
        if exc.code not in (ESRCH, ENOENT):
            raise
