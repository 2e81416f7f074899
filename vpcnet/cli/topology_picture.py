"""The lab's topology as a picture (pure): VPC -> subnets -> nodes -> ENIs (addresses, warm pool) -> pods.

`topology()` builds the model from what `vpcnet lab status -o json` reports (the EC2 state: subnets,
instances, ENIs with their secondary addresses and prefixes) and the pods the lab kubelet runs (address,
ENI). An ENI's warm pool is its secondary addresses no pod holds. Pods whose address is on no ENI (pool
mode, or not looked up yet) are drawn under their node. `to_dot()` and `to_svg()` draw the same model; the
console inlines the SVG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any


@dataclass(frozen=True)
class PodBox:
    ref: str  # NAMESPACE/NAME
    ip: str | None


@dataclass(frozen=True)
class EniBox:
    id: str
    device_index: int
    primary_ip: str
    subnet_id: str
    addresses: tuple[str, ...]  # secondary addresses
    prefixes: tuple[str, ...]
    warm: tuple[str, ...]  # secondary addresses no pod holds
    pods: tuple[PodBox, ...]


@dataclass(frozen=True)
class NodeBox:
    name: str
    instance_id: str
    instance_type: str
    primary_ip: str
    agent: str
    enis: tuple[EniBox, ...]
    other_pods: tuple[PodBox, ...]  # pods on no ENI of the node (pool addresses)


@dataclass(frozen=True)
class SubnetBox:
    id: str
    cidr: str
    az: str
    name: str
    nodes: tuple[NodeBox, ...]


@dataclass(frozen=True)
class Topology:
    prefix: str
    vpc_id: str
    cidr: str
    subnets: tuple[SubnetBox, ...]

    def nodes(self) -> list[NodeBox]:
        return [n for s in self.subnets for n in s.nodes]

    def pods(self) -> list[PodBox]:
        return [p for n in self.nodes() for e in n.enis for p in e.pods] + [
            p for n in self.nodes() for p in n.other_pods
        ]


@dataclass(frozen=True)
class PodPlace:
    """A running pod as the lab kubelet records it."""

    ref: str
    node: str
    ip: str | None
    eni: str | None


def topology(status: Mapping[str, Any], pods: Iterable[PodPlace]) -> Topology:
    """The model from a `lab status` document (up) and the running pods."""
    if not status.get("up"):
        raise ValueError(f"lab {status.get('prefix')} is not up")
    by_node: dict[str, list[PodPlace]] = {}
    for pod in sorted(pods, key=lambda p: p.ref):
        by_node.setdefault(pod.node, []).append(pod)
    subnets: dict[str, SubnetBox] = {}
    for name, sub in sorted(status.get("subnets", {}).items(), key=lambda kv: str(kv[1].get("id"))):
        subnets[str(sub["id"])] = SubnetBox(
            str(sub["id"]), str(sub["cidr"]), str(sub.get("az", "")), name, ()
        )
    nodes_of: dict[str, list[NodeBox]] = {}
    for n in status["nodes"]:
        node = _node(n, by_node.get(n["name"], []))
        nodes_of.setdefault(n["subnet_id"], []).append(node)
        if n["subnet_id"] not in subnets:
            subnets[n["subnet_id"]] = SubnetBox(n["subnet_id"], n["subnet_cidr"], n["az"], n["subnet_id"], ())
    boxes = tuple(
        SubnetBox(s.id, s.cidr, s.az, s.name, tuple(nodes_of.get(s.id, ()))) for s in subnets.values()
    )
    vpc = status["vpc"]
    return Topology(str(status.get("prefix", "")), str(vpc["id"]), str(vpc["cidr"]), boxes)


def _node(n: Mapping[str, Any], pods: list[PodPlace]) -> NodeBox:
    enis = []
    placed: set[str] = set()
    for e in n.get("enis", []):
        secondary = tuple(str(a) for a in e.get("secondary_ips", []))
        mine = [p for p in pods if p.ip is not None and (p.eni == e["id"] or p.ip in secondary)]
        placed.update(p.ref for p in mine)
        held = {p.ip for p in mine}
        enis.append(
            EniBox(
                str(e["id"]),
                int(e["device_index"]),
                str(e["primary_ip"]),
                str(e.get("subnet_id", "")),
                secondary,
                tuple(str(p) for p in e.get("prefixes", [])),
                tuple(a for a in secondary if a not in held),
                tuple(PodBox(p.ref, p.ip) for p in mine),
            )
        )
    others = tuple(PodBox(p.ref, p.ip) for p in pods if p.ref not in placed)
    return NodeBox(
        str(n["name"]),
        str(n["instance_id"]),
        str(n.get("instance_type", "")),
        str(n["primary_ip"]),
        str(n.get("agent", "")),
        tuple(enis),
        others,
    )


# ------------------------------------------------------------------------------------------------ dot


def _q(text: str) -> str:
    """A dot string; a newline in text becomes dot's line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(topo: Topology) -> str:
    """Graphviz: the VPC and each subnet a cluster, nodes and ENIs boxes, pods ellipses."""
    out = [f"digraph {_q('vpc ' + topo.prefix)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    out.append(f"  subgraph {_q('cluster_' + topo.vpc_id)} {{")
    out.append(f"    label={_q(f'VPC {topo.vpc_id} {topo.cidr}')};")
    for sub in topo.subnets:
        out.append(f"    subgraph {_q('cluster_' + sub.id)} {{")
        out.append(f"      label={_q(f'subnet {sub.id} {sub.cidr} ({sub.az})')};")
        for node in sub.nodes:
            label = f"{node.name}\n{node.instance_id} {node.instance_type}\n{node.primary_ip}"
            out.append(f"      {_q(node.name)} [shape=box3d, label={_q(label)}];")
        out.append("    }")
    out.append("  }")
    for node in topo.nodes():
        for eni in node.enis:
            extra = [f"{len(eni.addresses)} secondary, {len(eni.warm)} warm"] if eni.addresses else []
            extra += [f"prefix {p}" for p in eni.prefixes]
            label = "\n".join([f"eth{eni.device_index} {eni.id}", eni.primary_ip, *extra])
            out.append(f"  {_q(eni.id)} [shape=box, style=rounded, label={_q(label)}];")
            out.append(f"  {_q(node.name)} -> {_q(eni.id)};")
            for pod in eni.pods:
                out.append(_pod_dot(pod))
                out.append(f"  {_q(eni.id)} -> {_q(pod.ref)};")
        for pod in node.other_pods:
            out.append(_pod_dot(pod))
            out.append(f"  {_q(node.name)} -> {_q(pod.ref)};")
    out.append("}")
    return "\n".join(out) + "\n"


def _pod_dot(pod: PodBox) -> str:
    label = pod.ref + "\n" + (pod.ip or "-")
    return f"  {_q(pod.ref)} [shape=ellipse, label={_q(label)}];"


# ------------------------------------------------------------------------------------------------ svg

LINE = 16  # px per text line
PAD = 10
NODE_W = 330
WARM_SHOWN = 6  # warm addresses listed per ENI; the rest are counted
COLORS = {"vpc": "#f4f8fc", "subnet": "#e6f0e6", "node": "#ffffff", "eni": "#fff7e0", "pod": "#dcecff"}


def _text(x: float, y: float, text: str, cls: str = "", bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:g}" y="{y:g}"{klass}{weight}>{escape(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, rx: int = 4) -> str:
    return f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="{rx}" fill="{fill}" stroke="#778"/>'


def _eni_lines(eni: EniBox) -> list[str]:
    lines = [f"eth{eni.device_index} {eni.id}  {eni.primary_ip}"]
    if eni.prefixes:
        lines.append("prefixes " + ", ".join(eni.prefixes))
    if eni.addresses:
        lines.append(f"{len(eni.addresses)} secondary, warm pool {len(eni.warm)}" + (":" if eni.warm else ""))
        shown = eni.warm[:WARM_SHOWN]
        lines += ["  " + " ".join(shown[i : i + 3]) for i in range(0, len(shown), 3)]  # three fit a line
        if len(eni.warm) > WARM_SHOWN:
            lines.append(f"  ... and {len(eni.warm) - WARM_SHOWN} more")
    return lines


def _node_svg(node: NodeBox, x: int, y: int) -> tuple[list[str], int]:
    """The node's group and its height."""
    body: list[str] = []
    cy = y + PAD + LINE
    body.append(_text(x + PAD, cy, f"{node.name}  {node.primary_ip}", "title", bold=True))
    cy += LINE
    body.append(_text(x + PAD, cy, f"{node.instance_id} {node.instance_type} agent {node.agent}", "meta"))
    cy += PAD // 2
    for eni in node.enis:
        lines = _eni_lines(eni)
        top = cy
        inner = [_text(x + 2 * PAD, top + LINE * (i + 1), line) for i, line in enumerate(lines)]
        cy = top + LINE * len(lines) + PAD // 2
        pods_svg, cy = _pods_svg(eni.pods, x + 2 * PAD, cy, NODE_W - 4 * PAD)
        height = cy - top + PAD // 2
        body.append(f'<g class="eni" data-id="{escape(eni.id)}">')
        body.append(_rect(x + PAD, top, NODE_W - 2 * PAD, height, COLORS["eni"]))
        body += inner + pods_svg + ["</g>"]
        cy = top + height + PAD // 2
    pods_svg, cy = _pods_svg(node.other_pods, x + PAD, cy, NODE_W - 2 * PAD)
    body += pods_svg
    height = cy - y + PAD
    group = [f'<g class="node" data-name="{escape(node.name)}">', _rect(x, y, NODE_W, height, COLORS["node"])]
    return group + body + ["</g>"], height


def _pods_svg(pods: tuple[PodBox, ...], x: int, y: int, width: int) -> tuple[list[str], int]:
    out = []
    for pod in pods:
        out.append(f'<g class="pod" data-ref="{escape(pod.ref)}">')
        out.append(_rect(x, y, width, LINE + 6, COLORS["pod"], rx=9))
        out.append(_text(x + PAD, y + LINE, f"{pod.ref}  {pod.ip or '-'}"))
        out.append("</g>")
        y += LINE + 10
    return out, y


def to_svg(topo: Topology) -> str:
    """The VPC as nested boxes: subnets side by side, their nodes stacked, ENIs and pods inside nodes."""
    parts: list[str] = []
    x = 2 * PAD
    top = PAD + 2 * LINE + PAD
    bottom = top
    for sub in topo.subnets:
        inner: list[str] = [_text(x + PAD, top + LINE + 2, f"subnet {sub.id} {sub.cidr}", "title", bold=True)]
        inner.append(_text(x + PAD, top + 2 * LINE + 2, f"{sub.name} ({sub.az})", "meta"))
        cy = top + 2 * LINE + PAD
        for node in sub.nodes:
            group, height = _node_svg(node, x + PAD, cy)
            inner += group
            cy += height + PAD
        height = cy - top
        parts.append(f'<g class="subnet" data-id="{escape(sub.id)}">')
        parts.append(_rect(x, top, NODE_W + 2 * PAD, height, COLORS["subnet"]))
        parts += [*inner, "</g>"]
        bottom = max(bottom, top + height)
        x += NODE_W + 3 * PAD
    width = max(x + PAD, 400)
    height = bottom + 2 * PAD
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<g class="vpc" data-id="{escape(topo.vpc_id)}">',
        _rect(PAD, PAD, width - 2 * PAD, height - 2 * PAD, COLORS["vpc"], rx=8),
        _text(
            2 * PAD, PAD + LINE + 4, f"VPC {topo.vpc_id} {topo.cidr}  (lab {topo.prefix})", "title", bold=True
        ),
    ]
    return "\n".join([*head, *parts, "</g>", "</svg>"]) + "\n"


def lab_pods(layout: Any, nodes: Iterable[str]) -> list[PodPlace]:
    """The pods the lab kubelet runs (its records: the kernel's truth, no datastore needed)."""
    from vpcnet.lab.kubelet import PodRuntime

    return [PodPlace(r.ref, r.node, r.ip, r.eni or None) for r in PodRuntime(layout).records(list(nodes))]


def draw_lab(layout: Any, status: Mapping[str, Any], fmt: str) -> str:
    """The running lab's picture, svg or dot."""
    topo = topology(status, lab_pods(layout, [n["name"] for n in status["nodes"]]))
    return to_svg(topo) if fmt == "svg" else to_dot(topo)
