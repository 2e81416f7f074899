"""Secondary ENIs in the node's network namespace, as on EKS nodes (pyroute2, one netlink socket kept open).

For an ENI on device index d (d >= 1), route table d + 1:
    link up with the ENI MTU; the ENI's primary address on it; the kernel's subnet route moved out of main;
    table d+1: `<gw>/32 dev ethX scope link` and `default via <gw> dev ethX` (gw = subnet base + 1);
    rule `from <ENI primary IP> lookup d+1` at priority 32765.
Pods on the ENI get their own `from <pod IP> lookup d+1` rules from the CNI (priority 1536).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcnet.ipam.eni_pool import Eni

log = logging.getLogger(__name__)

FROM_ENI_PRIMARY_IP_PRIORITY = 32765
RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253
LINK_WAIT_SECONDS = 15.0  # the ENI's interface appears a moment after the attach (hot-plug)


class EniNotPresent(RuntimeError):
    pass


class KernelEniNetworking:
    def __init__(self) -> None:
        self.ipr: Any = AsyncIPRoute()  # made inside the agent's loop; kept open

    def close(self) -> None:
        self.ipr.close()

    async def _link_index(self, mac: str) -> int:
        waited = 0.0
        while True:
            found = await self.ipr.link_lookup(address=mac.lower())
            if found:
                return int(found[0])
            if waited >= LINK_WAIT_SECONDS:
                raise EniNotPresent(f"no interface with MAC {mac} appeared within {LINK_WAIT_SECONDS:g}s")
            await asyncio.sleep(0.1)
            waited += 0.1

    async def setup(self, eni: Eni, mtu: int) -> None:
        idx = await self._link_index(eni.mac)
        table = eni.route_table
        plen = eni.subnet_cidr.prefixlen
        await self.ipr.link("set", index=idx, mtu=mtu, state="up")
        have = {a.get_attr("IFA_ADDRESS") async for a in await self.ipr.get_addr(index=idx, family=2)}
        if str(eni.primary_ip) not in have:
            await self.ipr.addr("add", index=idx, address=str(eni.primary_ip), prefixlen=plen)
        # the subnet route the kernel added in main would send replies out of this ENI for every
        # subnet peer; on EKS it lives only in the ENI's table
        # (a delete must name its protocol and scope: pyroute2's defaults, boot/universe, match nothing)
        try:
            await self.ipr.route(
                "del", dst=str(eni.subnet_cidr), oif=idx, table=254, proto=RTPROT_KERNEL, scope=RT_SCOPE_LINK
            )
        except NetlinkError as exc:  # already moved (a second setup), or the kernel added none
            log.debug("no subnet route of %s in main to remove: %s", eni.eni_id, exc)
        gw = str(eni.gateway)
        await self.ipr.route("replace", dst=f"{gw}/32", oif=idx, scope=RT_SCOPE_LINK, table=table)
        await self.ipr.route("replace", dst="0.0.0.0/0", gateway=gw, oif=idx, table=table)
        rule: dict[str, Any] = dict(
            src=str(eni.primary_ip), src_len=32, table=table, priority=FROM_ENI_PRIMARY_IP_PRIORITY
        )
        if not await self._has_rule(**rule):
            await self.ipr.rule("add", family=2, **rule)
        log.info("configured ENI", extra={"eni": eni.eni_id, "ifindex": idx, "table": table, "mtu": mtu})

    async def _has_rule(self, *, src: str, src_len: int, table: int, priority: int) -> bool:
        async for r in await self.ipr.get_rules(family=2):
            if (
                r.get_attr("FRA_SRC") == src
                and r["src_len"] == src_len
                and (r.get_attr("FRA_TABLE") or r["table"]) == table
                and r.get_attr("FRA_PRIORITY") == priority
            ):
                return True
        return False

    async def teardown(self, eni: Eni) -> None:
        table = eni.route_table
        rule: dict[str, Any] = dict(
            src=str(eni.primary_ip), src_len=32, table=table, priority=FROM_ENI_PRIMARY_IP_PRIORITY
        )
        while await self._has_rule(**rule):
            try:
                await self.ipr.rule("del", family=2, **rule)
            except NetlinkError as exc:  # seen a moment ago, gone now: nothing left to delete
                log.debug("rule of %s already gone: %s", eni.eni_id, exc)
                break
        routes = [r async for r in await self.ipr.get_routes(family=2, table=table)]
        for route in routes:
            try:
                await self.ipr.route("del", **_route_key(route))
            except NetlinkError as exc:  # the kernel drops the table's routes itself when the link goes
                log.debug("route %s of %s already gone: %s", _route_key(route), eni.eni_id, exc)


def _route_key(route: Any) -> dict[str, Any]:
    key: dict[str, Any] = {"table": route.get_attr("RTA_TABLE") or route["table"]}
    dst = route.get_attr("RTA_DST")
    key["dst"] = f"{dst}/{route['dst_len']}" if dst else "0.0.0.0/0"
    oif = route.get_attr("RTA_OIF")
    if oif:
        key["oif"] = oif
    return key
