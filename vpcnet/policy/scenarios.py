"""Reachability scenarios: policies plus the expected matrix, in vpcnet's own YAML format.

The model is the upstream Kubernetes NetworkPolicy e2e one: namespaces x, y, z (only the implied
kubernetes.io/metadata.name label), pods a, b, c in each, labelled pod=<name>, each with one
container per (port, protocol) for ports 80, 81 and TCP, UDP, SCTP, named serve-<port>-<proto>.
A file looks like::

    topology:                     # optional; these are the defaults
      namespaces: [x, y, z]
      pods: [a, b, c]
      ports: [80, 81]
      protocols: [TCP, UDP, SCTP]
    scenarios:
    - name: default-deny-ingress
      upstream: "should support a 'default-deny-ingress' policy"   # free text, optional
      steps:                      # applied in order, state accumulates
      - apply: [<resource documents>]         # create or replace (same kind/namespace/name)
        delete: ["NetworkPolicy x/deny-all"]  # kind and [namespace/]name
        add_labels: [{pod: x/b, labels: {k: v}}, {namespace: y, labels: {k: v}}]
        expect:
        - port: 80
          protocol: TCP
          family: 6               # optional: the expectation holds over IPv6 only (4: IPv4 only)
          default: allow          # or deny
          cells:                  # applied in order, later lines win; '*' is a wildcard
          - deny * -> x/*
          - allow x/b -> x/a

Strings in applied documents may name pod addresses as ``{x/b}``; `load_scenarios` substitutes the
topology's addresses (or the ones passed in, e.g. a lab's). A pod may have an address of each family:
``{x/b}`` is its first, ``{x/b@4}`` and ``{x/b@6}`` the one of that family. A prefix length after a
placeholder (``{x/b}/24``) is written for IPv4; over an IPv6 address one of 8 bits or fewer is kept
(upstream's wide block, ``/4`` over a pod's address in both families: every pod of the cluster) and a longer
one becomes 96 more (``/32``: ``/128``), so the files' blocks cover the same pods in both families when a
pod's IPv6 address carries its IPv4 one in its low 32 bits, as `embedded_ipv6` makes it. An expectation
without a family holds over the family of the pods' first addresses (the one the placeholders were written
in); one with a family holds over that family only.
The diagonal (a pod to itself) is policy-consistent, as upstream computes it; upstream ignores it when
probing and so may a data plane test, because traffic to a pod's own address never leaves the pod.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vpcnet.api.base import ObjectMeta, Resource, ResourceKey
from vpcnet.api.core import Container, ContainerPort, Namespace, Pod
from vpcnet.api.loader import parse_resource

_PLACEHOLDER = re.compile(r"\{([a-z0-9-]+/[a-z0-9-]+)(?:@([46]))?\}(?:/(\d+))?")
EMBEDDING_NET6 = ipaddress.IPv6Network("fd00:77::/96")


def embedded_ipv6(ipv4: str, net: ipaddress.IPv6Network = EMBEDDING_NET6) -> str:
    """The IPv6 address a scenario run gives a pod beside (or instead of) an IPv4 one: the IPv4 address in
    the low 32 bits of a /96, so that an IPv4 block of N bits and the IPv6 block of N+96 bits over the
    embedded addresses hold the same pods."""
    if net.prefixlen != 96:
        raise ScenarioError(f"embedding network {net} must be a /96")
    return str(ipaddress.IPv6Address(int(net.network_address) | int(ipaddress.IPv4Address(ipv4))))


@dataclass(frozen=True)
class Topology:
    namespaces: tuple[str, ...] = ("x", "y", "z")
    pods: tuple[str, ...] = ("a", "b", "c")
    ports: tuple[int, ...] = (80, 81)
    protocols: tuple[str, ...] = ("TCP", "UDP", "SCTP")

    @property
    def refs(self) -> list[str]:
        return [f"{ns}/{pod}" for ns in self.namespaces for pod in self.pods]

    def default_ips(self) -> dict[str, str]:
        return {
            f"{ns}/{pod}": f"10.0.{i + 1}.{j + 10}"
            for i, ns in enumerate(self.namespaces)
            for j, pod in enumerate(self.pods)
        }

    def resources(self, ips: Mapping[str, PodAddresses] | None = None) -> list[Resource]:
        """Namespaces and pods of the model (pods carry status.podIPs from `ips` or the defaults)."""
        addresses = _address_lists(ips if ips is not None else self.default_ips())
        out: list[Resource] = [Namespace.named(ns) for ns in self.namespaces]
        for ns in self.namespaces:
            for pod in self.pods:
                containers = [
                    Container(
                        f"cont-{port}-{proto.lower()}",
                        [ContainerPort(port, proto, f"serve-{port}-{proto.lower()}")],
                    )
                    for port in self.ports
                    for proto in self.protocols
                ]
                out.append(
                    Pod(
                        ObjectMeta(name=pod, namespace=ns, labels={"pod": pod}),
                        containers=containers,
                        pod_ips=list(addresses.get(f"{ns}/{pod}", [])),
                    )
                )
        return out


PodAddresses = str | Sequence[str]  # one address, or a pod's addresses (first: the one `{x/b}` names)


def _address_lists(ips: Mapping[str, PodAddresses]) -> dict[str, list[str]]:
    return {ref: [a] if isinstance(a, str) else [x for x in a if x] for ref, a in ips.items() if a}


@dataclass(frozen=True)
class ScenarioCheck:
    """One expected matrix: the whole cluster state at that point, and the port/protocol probed."""

    name: str  # "<scenario>" or "<scenario>#<step>" when the scenario has several steps
    resources: tuple[Resource, ...]
    port: int
    protocol: str
    expected: dict[str, dict[str, bool]]
    source: str  # "<file>: <scenario>", for messages
    family: int | None = None  # 4 or 6: the cells hold over that family only; None: the pods' first family

    @property
    def probe_family(self) -> int:
        """The family the cells hold over: the expectation's own, else that of the pods' first addresses."""
        if self.family is not None:
            return self.family
        for resource in self.resources:
            if isinstance(resource, Pod) and resource.pod_ips:
                return ipaddress.ip_address(resource.pod_ips[0]).version
        return 4

    def expected_cells(self) -> Iterable[tuple[str, str, bool]]:
        for src, row in self.expected.items():
            for dst, allowed in row.items():
                yield src, dst, allowed


class ScenarioError(ValueError):
    pass


def load_scenarios(
    paths: Iterable[str | Path], pod_ips: Mapping[str, PodAddresses] | None = None
) -> list[ScenarioCheck]:
    """Every check of every scenario in the given files (or *.yaml files of given directories)."""
    out: list[ScenarioCheck] = []
    for path in _expand(paths):
        out += load_scenario_file(path, pod_ips)
    return out


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    return files


def load_scenario_file(
    path: str | Path, pod_ips: Mapping[str, PodAddresses] | None = None
) -> list[ScenarioCheck]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ScenarioError(f"{path}: expected a mapping with a 'scenarios' list")
    topo = _topology(data.get("topology") or {}, str(path))
    ips = _address_lists(pod_ips if pod_ips is not None else topo.default_ips())
    out: list[ScenarioCheck] = []
    names: set[str] = set()
    for i, scenario in enumerate(data["scenarios"]):
        name = scenario.get("name") if isinstance(scenario, dict) else None
        if not isinstance(name, str) or not name:
            raise ScenarioError(f"{path}: scenarios[{i}] needs a name")
        if name in names:
            raise ScenarioError(f"{path}: scenario {name!r} defined twice")
        names.add(name)
        out += _scenario_checks(scenario, topo, ips, f"{path}: {name}")
    return out


def _topology(data: dict[str, Any], where: str) -> Topology:
    known = {"namespaces", "pods", "ports", "protocols"}
    if set(data) - known:
        raise ScenarioError(f"{where}: unknown topology fields {sorted(set(data) - known)}")
    base = Topology()
    return Topology(
        tuple(data.get("namespaces", base.namespaces)),
        tuple(data.get("pods", base.pods)),
        tuple(int(p) for p in data.get("ports", base.ports)),
        tuple(data.get("protocols", base.protocols)),
    )


def _substitute(value: Any, ips: Mapping[str, list[str]], where: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            ref, family, length = m.group(1), m.group(2), m.group(3)
            addresses = ips.get(ref, [])
            if family is not None:
                addresses = [a for a in addresses if ipaddress.ip_address(a).version == int(family)]
            if not addresses:
                what = f"IPv{family} address" if family else "address"
                raise ScenarioError(f"{where}: no {what} for pod {ref!r}")
            address = addresses[0]
            if length is None:
                return address
            if int(length) > 32:
                raise ScenarioError(f"{where}: {m.group(0)!r}: prefix lengths are written for IPv4 (0-32)")
            return f"{address}/{ipv6_prefix(int(length)) if ':' in address else length}"

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, ips, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ips, where) for k, v in value.items()}
    return value


def ipv6_prefix(ipv4_length: int) -> int:
    """The IPv6 prefix length of a scenario block written for IPv4 (see the module's docstring)."""
    return ipv4_length if ipv4_length <= WIDE_BLOCK_BITS else ipv4_length + 96


WIDE_BLOCK_BITS = 8


def _scenario_checks(
    scenario: dict[str, Any], topo: Topology, ips: Mapping[str, list[str]], where: str
) -> list[ScenarioCheck]:
    state: dict[ResourceKey, Resource] = {r.key: r for r in topo.resources(ips)}
    steps = scenario.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"{where}: needs a non-empty 'steps' list")
    out: list[ScenarioCheck] = []
    for s, step in enumerate(steps):
        swhere = f"{where} step {s}"
        for d, doc in enumerate(step.get("apply") or []):
            resource = parse_resource(_substitute(doc, ips, swhere), f"{swhere} apply[{d}]")
            state[resource.key] = resource
        for text in step.get("delete") or []:
            key = _key_from_text(str(text), swhere)
            if key not in state:
                raise ScenarioError(f"{swhere}: cannot delete {text!r}: no such resource")
            del state[key]
        for change in step.get("add_labels") or []:
            _add_labels(state, change, swhere)
        name = scenario["name"] if len(steps) == 1 else f"{scenario['name']}#{s}"
        for e, expect in enumerate(step.get("expect") or []):
            port = int(expect["port"])
            protocol = str(expect.get("protocol", "TCP"))
            ewhere = f"{swhere} expect[{e}]"
            matrix = _expected_matrix(topo, expect, ewhere)
            family = expect.get("family")
            if family not in (None, 4, 6):
                raise ScenarioError(f"{ewhere}: family must be 4 or 6, got {family!r}")
            out.append(ScenarioCheck(name, tuple(state.values()), port, protocol, matrix, where, family))
    return out


def _key_from_text(text: str, where: str) -> ResourceKey:
    kind, _, ref = text.partition(" ")
    ns, slash, name = ref.strip().rpartition("/")
    if not kind or not name:
        raise ScenarioError(f"{where}: delete entries look like 'NetworkPolicy x/name', got {text!r}")
    return ResourceKey(kind, ns if slash else None, name)


def _add_labels(state: dict[ResourceKey, Resource], change: dict[str, Any], where: str) -> None:
    labels = {str(k): str(v) for k, v in (change.get("labels") or {}).items()}
    if "pod" in change:
        ns, _, name = str(change["pod"]).partition("/")
        key = ResourceKey("Pod", ns, name)
    elif "namespace" in change:
        key = ResourceKey("Namespace", None, str(change["namespace"]))
    else:
        raise ScenarioError(f"{where}: add_labels entries need 'pod' or 'namespace'")
    if key not in state:
        raise ScenarioError(f"{where}: add_labels: no {key}")
    updated = copy.deepcopy(state[key])
    updated.metadata.labels.update(labels)
    state[key] = updated


def _pattern_matches(pattern: str, ref: str) -> bool:
    if pattern == "*":
        return True
    pns, _, ppod = pattern.partition("/")
    ns, _, pod = ref.partition("/")
    return pns in ("*", ns) and ppod in ("*", pod)


def _expected_matrix(topo: Topology, expect: dict[str, Any], where: str) -> dict[str, dict[str, bool]]:
    default = expect.get("default", "allow")
    if default not in ("allow", "deny"):
        raise ScenarioError(f"{where}: default must be allow or deny")
    refs = topo.refs
    matrix = {s: {d: default == "allow" for d in refs} for s in refs}
    for line in expect.get("cells") or []:
        m = re.fullmatch(r"\s*(allow|deny)\s+(\S+)\s*->\s*(\S+)\s*", str(line))
        if not m:
            raise ScenarioError(f"{where}: cell lines look like 'deny x/* -> y/a', got {line!r}")
        verdict, src_pat, dst_pat = m.group(1) == "allow", m.group(2), m.group(3)
        hit = False
        for s in refs:
            if _pattern_matches(src_pat, s):
                for d in refs:
                    if _pattern_matches(dst_pat, d):
                        matrix[s][d] = verdict
                        hit = True
        if not hit:
            raise ScenarioError(f"{where}: {line!r} matches no pod pair")
    return matrix
