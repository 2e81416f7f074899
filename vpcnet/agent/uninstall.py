"""`vpcnet uninstall`: take off a node what vpcnet's agent put on it, and nothing else.

Run on the node (as root) once the DaemonSet is deleted and the node's pods are gone (drained): until then
the pods keep working on the kernel state the agent left, as with aws-node or calico-node. Removed:

- the CNI network config (10-vpcnet.conflist) and plugin (vpcnet-cni, vpcnet-shim/); portmap and loopback
  stay (plugins other networks chain too, often owned by a distribution package);
- iptables and ip6tables chains of ours, in every table: vpcn-* (policy, pool NAT) and the host network's
  AWS-*-CHAIN-0 (the VPC CNI's names, vpcnet/dataplane/hostnet.py) and the pod fence's VPCNET-POD-FENCE
  (vpcnet/dataplane/podfence.py), with the rules in built-in chains that jump to them and the host
  network's connmark restore rule;
- ipsets whose names start with vpcn4/vpcn6, and the nftables tables named vpcnet;
- the host network's fwmark rule, and routes of our protocol (86, the pool routes) in every table.

Each item is found by its name (or, for the one rule, its exact selector), so another network's chains,
sets, tables, routes and rules are never touched. Running it twice removes nothing the second time.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vpcnet.cni.install import CONFLIST_NAME, PLUGIN_TYPE
from vpcnet.dataplane import hostnet, names, podfence, poolroutes

SHIM_DIR = "vpcnet-shim"
IPTABLES_TABLES = ("raw", "mangle", "nat", "filter")
# Chains of ours named outside vpcn-*: the host network's (the VPC CNI's names) and the pod fence's.
HOST_CHAINS = (hostnet.SNAT_CHAIN, hostnet.CONNMARK_CHAIN, hostnet.NODEPORT_CHAIN, podfence.FENCE_CHAIN)
# The one rule of ours in a built-in chain that jumps to no chain of ours (hostnet.jump_rules).
RESTORE_MARK_RULE = (
    f'-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark '
    f"--nfmask {hostnet.CONNMARK} --ctmask {hostnet.CONNMARK}"
)
_JUMP = re.compile(r"\s-[jg]\s+(\S+)")
# Flags `ip route show` prints that `ip route del` does not take.
ROUTE_FLAGS = {"linkdown", "dead", "offload", "trap", "rt_offload", "rt_trap", "rt_offload_failed"}


class UninstallError(RuntimeError):
    pass


@dataclass
class Removed:
    """What uninstall took away, by kind (what the command prints)."""

    files: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # "<command> <table> <chain>"
    rules: list[str] = field(default_factory=list)
    ipsets: list[str] = field(default_factory=list)
    nft_tables: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        kinds = ("files", "chains", "rules", "ipsets", "nft_tables", "routes")
        return [f"removed {k[:-1].replace('_', ' ')}: {item}" for k in kinds for item in getattr(self, k)]


def ours_chain(name: str) -> bool:
    return name.startswith(names.CHAIN_PREFIX) or name in HOST_CHAINS


def ours_ipset(name: str) -> bool:
    return name.startswith((f"{names.PREFIX}4", f"{names.PREFIX}6"))


class Node:
    """Commands run in the node's network namespace: this one, or the named one (`ip netns exec`)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    def run(self, argv: Sequence[str], stdin: str = "", check: bool = True) -> str:
        full = [*(["ip", "netns", "exec", self.netns] if self.netns else []), *argv]
        proc = subprocess.run(full, input=stdin, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise UninstallError(f"{shlex.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout


def removal_input(save: str, table: str) -> tuple[str, list[str], list[str]]:
    """iptables-restore --noflush input that deletes our rules in built-in chains, then flushes and deletes
    our chains, for one table's iptables-save text; also the rules and chains it removes."""
    chains = [line[1:].split(" ", 1)[0] for line in save.splitlines() if line.startswith(":")]
    ours = [c for c in chains if ours_chain(c)]
    rules = []
    for line in save.splitlines():
        if not line.startswith("-A ") or ours_chain(line.split()[1]):
            continue
        jump = _JUMP.search(line)
        if (jump and ours_chain(jump.group(1))) or (table == "nat" and line == RESTORE_MARK_RULE):
            rules.append(line)
    if not ours and not rules:
        return "", [], []
    body = ["-D" + rule[2:] for rule in rules]
    body += [f":{c} - [0:0]" for c in ours] + [f"-X {c}" for c in ours]
    return "\n".join([f"*{table}", *body, "COMMIT"]) + "\n", rules, ours


def remove_iptables(node: Node, removed: Removed) -> None:
    for command in ("iptables", "ip6tables"):
        if shutil.which(f"{command}-save") is None:
            continue
        for table in IPTABLES_TABLES:
            save = node.run([f"{command}-save", "-t", table], check=False)
            data, rules, chains = removal_input(save, table)
            if data:
                node.run([f"{command}-restore", "--noflush", "-w", "5"], stdin=data)
                removed.rules += [f"{command} -t {table} {r}" for r in rules]
                removed.chains += [f"{command} {table} {c}" for c in chains]


def remove_ipsets(node: Node, removed: Removed) -> None:
    if shutil.which("ipset") is None:
        return
    for name in node.run(["ipset", "list", "-n"], check=False).split():
        if ours_ipset(name):
            node.run(["ipset", "destroy", name])
            removed.ipsets.append(name)


def remove_nft(node: Node, removed: Removed) -> None:
    if shutil.which("nft") is None:
        return
    for line in node.run(["nft", "list", "tables"], check=False).splitlines():
        parts = line.split()  # "table <family> <name>"
        if len(parts) == 3 and parts[0] == "table" and parts[2] == names.NFT_TABLE:
            node.run(["nft", "delete", "table", parts[1], parts[2]])
            removed.nft_tables.append(f"{parts[1]} {parts[2]}")


def remove_routes(node: Node, removed: Removed) -> None:
    proto = str(poolroutes.ROUTE_PROTOCOL)
    for family in ("-4", "-6"):
        for route in node.run(["ip", family, "route", "show", "table", "all", "proto", proto]).splitlines():
            node.run(["ip", family, "route", "del", *(w for w in route.split() if w not in ROUTE_FLAGS)])
            removed.routes.append(route)
    mark = f"{int(hostnet.CONNMARK, 16):#x}"
    selector = ["fwmark", f"{mark}/{mark}", "lookup", "main", "priority", str(hostnet.FWMARK_RULE_PRIORITY)]
    rules = node.run(["ip", "-4", "rule", "show", "priority", str(hostnet.FWMARK_RULE_PRIORITY)])
    if any(line.split(":", 1)[1].split() == ["from", "all", *selector[:4]] for line in rules.splitlines()):
        node.run(["ip", "-4", "rule", "del", *selector])
        removed.rules.append("ip rule " + " ".join(selector))


def remove_cni_files(bin_dir: Path, conf_dir: Path, removed: Removed) -> None:
    for path in (conf_dir / CONFLIST_NAME, bin_dir / PLUGIN_TYPE):
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.files.append(str(path))
    shim = bin_dir / SHIM_DIR
    if shim.is_dir() and not shim.is_symlink():
        shutil.rmtree(shim)
        removed.files.append(f"{shim}/")


def uninstall(bin_dir: Path, conf_dir: Path, netns: str | None = None) -> Removed:
    """Remove vpcnet's files and kernel state from the node (see the module's note); what was removed.
    The network config goes first, so no new pod is handed to a plugin that is being taken away."""
    for what, path in (("--bin-dir", bin_dir), ("--conf-dir", conf_dir)):
        if path.exists() and not path.is_dir():
            raise UninstallError(f"{what} {path} is not a directory")
    if netns is not None and not (Path("/run/netns") / netns).exists():
        raise UninstallError(f"--netns {netns}: no such network namespace in /run/netns")
    removed = Removed()
    remove_cni_files(bin_dir, conf_dir, removed)
    node = Node(netns)
    remove_iptables(node, removed)  # before the sets: rules may still reference them
    remove_ipsets(node, removed)
    remove_nft(node, removed)
    remove_routes(node, removed)
    return removed
