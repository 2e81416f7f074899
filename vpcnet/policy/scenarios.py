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
          default: allow          # or deny
          cells:                  # applied in order, later lines win; '*' is a wildcard
          - deny * -> x/*
          - allow x/b -> x/a

Strings in applied documents may name pod addresses as ``{x/b}``; `load_scenarios` substitutes the
topology's addresses (or the ones passed in, e.g. a lab's). The diagonal (a pod to itself) is
policy-consistent, as upstream computes it; upstream ignores it when probing and so may a data plane
test, because traffic to a pod's own address never leaves the pod.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vpcnet.api.base import ObjectMeta, Resource, ResourceKey
from vpcnet.api.core import Container, ContainerPort, Namespace, Pod
from vpcnet.api.loader import parse_resource

_PLACEHOLDER = re.compile(r"\{([a-z0-9-]+/[a-z0-9-]+)\}")


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

    def resources(self, ips: Mapping[str, str] | None = None) -> list[Resource]:
        """Namespaces and pods of the model (pods carry status.podIP from `ips` or the defaults)."""
        addresses = dict(ips) if ips is not None else self.default_ips()
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
                ref = f"{ns}/{pod}"
                ip = addresses.get(ref)
                out.append(
                    Pod(
                        ObjectMeta(name=pod, namespace=ns, labels={"pod": pod}),
                        containers=containers,
                        pod_ips=[ip] if ip else [],
                    )
                )
        return out


@dataclass(frozen=True)
class ScenarioCheck:
    """One expected matrix: the whole cluster state at that point, and the port/protocol probed."""

    name: str  # "<scenario>" or "<scenario>#<step>" when the scenario has several steps
    resources: tuple[Resource, ...]
    port: int
    protocol: str
    expected: dict[str, dict[str, bool]]
    source: str  # "<file>: <scenario>", for messages

    def expected_cells(self) -> Iterable[tuple[str, str, bool]]:
        for src, row in self.expected.items():
            for dst, allowed in row.items():
                yield src, dst, allowed


class ScenarioError(ValueError):
    pass


def load_scenarios(
    paths: Iterable[str | Path], pod_ips: Mapping[str, str] | None = None
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


def load_scenario_file(path: str | Path, pod_ips: Mapping[str, str] | None = None) -> list[ScenarioCheck]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ScenarioError(f"{path}: expected a mapping with a 'scenarios' list")
    topo = _topology(data.get("topology") or {}, str(path))
    ips = dict(pod_ips) if pod_ips is not None else topo.default_ips()
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


def _substitute(value: Any, ips: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref not in ips:
                raise ScenarioError(f"{where}: no address for pod {ref!r}")
            return ips[ref]

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, ips, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ips, where) for k, v in value.items()}
    return value


def _scenario_checks(
    scenario: dict[str, Any], topo: Topology, ips: Mapping[str, str], where: str
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
            matrix = _expected_matrix(topo, expect, f"{swhere} expect[{e}]")
            out.append(ScenarioCheck(name, tuple(state.values()), port, protocol, matrix, where))
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
