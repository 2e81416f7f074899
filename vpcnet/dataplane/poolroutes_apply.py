"""Applying a PoolDataplane in a node's network namespace: tunnels, routes, neighbours, FDB, NAT.

Only what is ours is read and changed: routes with protocol ROUTE_PROTOCOL, permanent neighbours and FDB
entries on our VXLAN device, and our NAT chain (plus one jump to it). The current state is read back
(`ip -j`, `bridge -j`, `iptables-save`), compared, and only the differences are sent, in one `ip -batch`,
one `bridge -batch` and one `iptables-restore --noflush`: a second apply of the same state sends nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from ipaddress import ip_address, ip_network
from typing import Any

from vpcnet.dataplane.kernel_cmd import CommandRunner, DataplaneError, SubprocessRunner
from vpcnet.dataplane.poolroutes import (
    IPIP_DEVICE,
    NAT_CHAIN,
    NAT_JUMP_COMMENT,
    ROUTE_PROTOCOL,
    FdbEntry,
    Neighbor,
    PoolDataplane,
    Route,
    Tunnel,
    nat_jump,
    render_fdb_batch,
    render_ip_batch,
    render_nat_restore,
)
from vpcnet.ipam.blocks import Cidr


class IpipUnsupported(DataplaneError):
    """The kernel has no IP-in-IP (ipip module): pools with ipipMode cannot be programmed here."""


@dataclass
class ApplyStats:
    ip_lines: int = 0
    fdb_lines: int = 0
    nat_changed: bool = False
    tunnels_created: int = 0
    forwarding_enabled: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.ip_lines
            or self.fdb_lines
            or self.nat_changed
            or self.tunnels_created
            or self.forwarding_enabled
        )


async def _json(runner: CommandRunner, argv: list[str]) -> Any:
    result = (await runner.run(argv)).check()
    text = result.stdout.decode().strip()
    return json.loads(text) if text else []


async def current_routes(runner: CommandRunner, families: tuple[str, ...] = ("-4", "-6")) -> set[Route]:
    routes = set()
    for family in families:
        for entry in await _json(
            runner, ["ip", "-j", family, "route", "show", "table", "main", "proto", str(ROUTE_PROTOCOL)]
        ):
            dst = ip_network(_full_prefix(entry["dst"], family))
            if entry.get("type") == "blackhole":
                routes.add(Route(dst, "blackhole"))
            elif "gateway" in entry:
                onlink = "onlink" in entry.get("flags", [])
                routes.add(Route(dst, "unicast", ip_address(entry["gateway"]), entry["dev"], onlink))
            else:
                routes.add(Route(dst, "other", None, entry.get("dev")))  # not one we make: replaced
    return routes


def _full_prefix(dst: str, family: str) -> str:
    """`ip -j` prints a host route without its length (10.0.0.1, fd00::1)."""
    if "/" in dst:
        return dst
    return f"{dst}/{32 if family == '-4' else 128}"


async def _link(runner: CommandRunner, name: str) -> dict[str, Any] | None:
    result = await runner.run(["ip", "-j", "-d", "link", "show", "dev", name])
    if result.returncode != 0:
        return None
    links = json.loads(result.stdout.decode() or "[]")
    return links[0] if links else None


async def current_neighbors(runner: CommandRunner, dev: str, within: Cidr | None = None) -> set[Neighbor]:
    """Permanent neighbours on dev (on the uplink: only IPv6 ones inside within, the node's /64, the
    only ones we pin there)."""
    out = set()
    family = ["-6"] if within is not None else []
    for entry in await _json(runner, ["ip", "-j", *family, "neigh", "show", "dev", dev, "nud", "permanent"]):
        if "lladdr" not in entry:
            continue
        address = ip_address(entry["dst"])
        if within is None or (address.version == within.version and address in within):
            out.add(Neighbor(dev, address, entry["lladdr"]))
    return out


async def current_fdb(runner: CommandRunner, dev: str) -> set[FdbEntry]:
    out = set()
    for entry in await _json(runner, ["bridge", "-j", "fdb", "show", "dev", dev]):
        if "dst" in entry and entry.get("state") == "permanent":
            out.add(FdbEntry(dev, entry["mac"], ip_address(entry["dst"])))
    return out


async def ensure_tunnel(runner: CommandRunner, tunnel: Tunnel) -> bool:
    """Create (or re-create, if its parameters changed) the tunnel device; True when something changed."""
    link = await _link(runner, tunnel.name)
    if tunnel.kind == "ipip":
        if link is None:
            result = await runner.run(["ip", "link", "add", tunnel.name, "type", "ipip"])
            if result.returncode != 0:
                raise IpipUnsupported(
                    "IP-in-IP pools need the kernel's ipip module, which this kernel lacks "
                    f"({result.stderr.decode().strip()}); use vxlanMode instead of ipipMode"
                )
        (await runner.run(["ip", "link", "set", tunnel.name, "mtu", str(tunnel.mtu), "up"])).check()
        return link is None
    data = ((link or {}).get("linkinfo") or {}).get("info_data") or {}
    wanted = (tunnel.vni, str(tunnel.local), tunnel.port)
    local = data.get("local") or data.get("local6")  # iproute2 names an IPv6 local "local6"
    if link is not None and (data.get("id"), local, data.get("port")) == wanted:
        if (
            link.get("address") == tunnel.mac
            and link.get("mtu") == tunnel.mtu
            and "UP" in link.get("flags", [])
        ):
            return False
        (
            await runner.run(
                ["ip", "link", "set", tunnel.name, "address", tunnel.mac, "mtu", str(tunnel.mtu), "up"]
            )
        ).check()
        return True
    if link is not None:
        (await runner.run(["ip", "link", "del", tunnel.name])).check()
    add = ["ip", "link", "add", tunnel.name, "address", tunnel.mac, "mtu", str(tunnel.mtu), "type", "vxlan"]
    add += [
        "id",
        str(tunnel.vni),
        "local",
        str(tunnel.local),
        "dev",
        tunnel.parent,
        "dstport",
        str(tunnel.port),
    ]
    (await runner.run([*add, "nolearning"])).check()
    (await runner.run(["ip", "link", "set", tunnel.name, "up"])).check()
    return True


def _tables(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


async def _nat_state(runner: CommandRunner, version: int = 4) -> tuple[bool, bool, tuple[str, ...]]:
    """(chain exists, jump exists, the chain's rules)."""
    text = (await runner.run([f"{_tables(version)}-save", "-t", "nat"])).check().stdout.decode()
    chain = jump = False
    rules = []
    for line in text.splitlines():
        if line.startswith(f":{NAT_CHAIN} "):
            chain = True
        elif line.startswith(f"-A {NAT_CHAIN} "):
            rules.append(line)
        elif line.startswith("-A POSTROUTING") and NAT_JUMP_COMMENT in line and f"-j {NAT_CHAIN}" in line:
            jump = True
    return chain, jump, tuple(rules)


async def apply_nat(runner: CommandRunner, rules: tuple[str, ...], version: int = 4) -> bool:
    chain, jump, present = await _nat_state(runner, version)
    if rules:
        if chain and jump and present == rules:
            return False
        text = render_nat_restore(rules, jump_present=jump)
    else:
        if not chain:
            return False
        text = (
            "*nat\n"
            + (f"-D {nat_jump()[3:]}\n" if jump else "")
            + f"-F {NAT_CHAIN}\n-X {NAT_CHAIN}\nCOMMIT\n"
        )
    argv = [f"{_tables(version)}-restore", "--noflush", "-w", "5"]
    (await runner.run(argv, text.encode())).check(text.encode())
    return True


async def link_mtu(name: str, runner: CommandRunner | None = None) -> int:
    """The MTU of a link (the uplink: tunnels take their overhead off it)."""
    link = await _link(runner or SubprocessRunner(), name)
    if link is None:
        raise DataplaneError(f"no link {name!r} in this network namespace")
    return int(link["mtu"])


async def ensure_forwarding(runner: CommandRunner, key: str = "net.ipv4.ip_forward") -> bool:
    """The node routes pod traffic: forwarding on (VPC mode's host network setup does it there); for
    IPv6 pods key is net.ipv6.conf.all.forwarding."""
    current = (await runner.run(["sysctl", "-n", key])).check().stdout.decode().strip()
    if current == "1":
        return False
    (await runner.run(["sysctl", "-qw", f"{key}=1"])).check()
    return True


async def _has_ipv6_routes(runner: CommandRunner) -> bool:
    """Whether IPv6 routes of ours are left to remove (an IPv4-only node skips reading IPv6 back)."""
    result = await runner.run(["ip", "-6", "route", "show", "table", "main", "proto", str(ROUTE_PROTOCOL)])
    return result.returncode == 0 and bool(result.stdout.strip())


async def apply_pool_dataplane(desired: PoolDataplane, runner: CommandRunner | None = None) -> ApplyStats:
    """Make the namespace match desired (routes, neighbours, FDB, tunnels, NAT); idempotent. Raises
    IpipUnsupported after programming everything else when the kernel cannot make the IP-in-IP tunnel."""
    runner = runner or SubprocessRunner()
    stats = ApplyStats()
    if desired.routes or desired.tunnels:
        stats.forwarding_enabled = await ensure_forwarding(runner)
    if any(r.dst.version == 6 for r in desired.routes):
        stats.forwarding_enabled |= await ensure_forwarding(runner, "net.ipv6.conf.all.forwarding")
    unsupported: IpipUnsupported | None = None
    for tunnel in desired.tunnels:
        try:
            if await ensure_tunnel(runner, tunnel):
                stats.tunnels_created += 1
        except IpipUnsupported as err:
            unsupported = err
    if unsupported is not None:
        # One IP-in-IP pool must not cost the other pools their routes: program everything but the routes
        # through the missing tunnel, then report.
        desired = replace(desired, routes=frozenset(r for r in desired.routes if r.dev != IPIP_DEVICE))
    vxlan_devs = {t.name for t in desired.tunnels if t.kind == "vxlan"}
    neighbors: set[Neighbor] = set()
    fdb: set[FdbEntry] = set()
    for dev in vxlan_devs:
        neighbors |= await current_neighbors(runner, dev)
        fdb |= await current_fdb(runner, dev)
    if desired.uplink_subnet6 is not None:
        neighbors |= await current_neighbors(runner, desired.uplink, desired.uplink_subnet6)
    fdb_lines = render_fdb_batch(fdb, desired)
    if fdb_lines:
        stdin = ("\n".join(fdb_lines) + "\n").encode()
        (await runner.run(["bridge", "-batch", "-"], stdin)).check(stdin)
    ipv6 = any(r.dst.version == 6 for r in desired.routes) or await _has_ipv6_routes(runner)
    ip_lines = render_ip_batch(
        await current_routes(runner, ("-4", "-6") if ipv6 else ("-4",)), desired, neighbors
    )
    if ip_lines:
        stdin = ("\n".join(ip_lines) + "\n").encode()
        (await runner.run(["ip", "-batch", "-"], stdin)).check(stdin)
    stats.ip_lines, stats.fdb_lines = len(ip_lines), len(fdb_lines)
    stats.nat_changed = await apply_nat(runner, desired.nat_rules)
    if desired.nat6_rules or ipv6:
        stats.nat_changed |= await apply_nat(runner, desired.nat6_rules, 6)
    if unsupported is not None:
        raise unsupported
    return stats
