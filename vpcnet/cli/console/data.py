"""What the console's /api/... endpoints answer, assembled from what was read (pure: no I/O here).

The sources (vpcnet.cli.console.sources) read the lab's EC2 state and kubelet records, the agents'
/v1/ipam and /v1/flows, and the Kubernetes API; these functions turn that into the JSON the page shows.
The reachability matrix is the policy engine's (as `vpcnet lab probe --compare` computes it), with the
kernel's verdicts beside it when a probe ran; an explanation is `vpcnet policy explain`'s text.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from vpcnet.cli.labprobe import PROTOCOLS, disagreements, expected_matrix
from vpcnet.cli.matrix_picture import matrix_svg
from vpcnet.cli.topology_picture import EniBox, NodeBox, PodBox, SubnetBox, Topology, to_svg

Matrix = dict[str, dict[str, bool]]
MAX_FLOWS = 500  # the newest flows the page gets


class BadQuery(ValueError):
    """A query parameter the console cannot use: answered 400 with the message."""


def _one(query: Mapping[str, list[str]], name: str, default: str | None = None) -> str:
    values = query.get(name)
    if not values or not values[-1]:
        if default is None:
            raise BadQuery(f"{name}: missing")
        return default
    return values[-1]


def port_protocol(query_string: str) -> tuple[int, str]:
    """?port=N&protocol=TCP|UDP|SCTP (defaults 80, TCP); BadQuery names a bad parameter."""
    query = urllib.parse.parse_qs(query_string)
    text = _one(query, "port", "80")
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise BadQuery(f"port={text!r}: expected a number from 1 to 65535")
    protocol = _one(query, "protocol", "TCP").upper()
    if protocol not in PROTOCOLS:
        raise BadQuery(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return int(text), protocol


# ------------------------------------------------------------------------------------------- topology


def topology_doc(topo: Topology) -> dict[str, Any]:
    """The picture (SVG) and the same facts as data (nodes, ENIs, pods) for lists and tests."""
    return {
        "vpc": {"id": topo.vpc_id, "cidr": topo.cidr, "prefix": topo.prefix},
        "subnets": [asdict(s) for s in topo.subnets],
        "nodes": [n.name for n in topo.nodes()],
        "pods": sorted(p.ref for p in topo.pods()),
        "svg": to_svg(topo),
    }


def node_topology(node: str, ipam: Mapping[str, Any]) -> Topology:
    """One node's part of the VPC from its agent's /v1/ipam (outside the lab: what this node knows)."""
    enis = []
    subnets: dict[str, str] = {}
    for e in ipam.get("ENIs", []):
        subnets.setdefault(str(e["subnet"]), str(e["subnetCIDR"]))
        ips = [ip for ip in e.get("ips", []) if ip["address"] != e["primaryIP"]]
        pods = tuple(PodBox(ip["pod"], ip["address"]) for ip in ips if ip["assigned"] and ip["pod"])
        enis.append(
            EniBox(
                str(e["id"]),
                int(e["deviceNumber"]),
                str(e["primaryIP"]),
                str(e["subnet"]),
                tuple(ip["address"] for ip in ips),
                tuple(e.get("prefixes", [])),
                tuple(ip["address"] for ip in ips if not ip["assigned"] and not ip["cooling"]),
                pods,
            )
        )
    primary = next((e for e in enis if e.device_index == 0), None)
    box = NodeBox(
        node,
        str(ipam.get("instanceId", "")),
        str(ipam.get("instanceType", "")),
        primary.primary_ip if primary else "",
        "ready" if ipam.get("ready") else "starting",
        tuple(enis),
        (),
    )
    home = primary.subnet_id if primary else ""
    boxes = tuple(
        SubnetBox(sid, cidr, "", sid, (box,) if sid == home else ()) for sid, cidr in sorted(subnets.items())
    )
    return Topology(node, "", "", boxes)


# --------------------------------------------------------------------------------------------- matrix


def matrix_doc(
    resources: Sequence[Any], refs: Sequence[str], port: int, protocol: str, measured: Matrix | None
) -> dict[str, Any]:
    """The policy engine's matrix over the running pods `refs` (those the API knows), the kernel's beside
    it when probed, the cells where they differ (a pod's traffic to itself aside, as `lab probe`), and
    the picture."""
    from vpcnet.api import Pod

    known = {r.ref for r in resources if isinstance(r, Pod)}
    names = [ref for ref in refs if ref in known]
    expected = expected_matrix(list(resources), names, port, protocol)
    diffs = disagreements(measured, expected, ignore_loopback=True) if measured is not None else []
    caption = f"{protocol}/{port}: the policy engine" + (", the kernel beside it" if measured else "")
    return {
        "port": port,
        "protocol": protocol,
        "refs": names,
        "expected": expected,
        "measured": measured,
        "disagreements": [{"from": s, "to": d, "measured": g, "expected": w} for s, d, g, w in diffs],
        "svg": matrix_svg(caption, measured, expected, ignore_loopback=True),
    }


# ---------------------------------------------------------------------------------------------- flows


def _ref(end: Mapping[str, Any]) -> str:
    return f"{end['namespace']}/{end['pod']}" if end.get("pod") else str(end.get("ip"))


def flows_doc(
    per_node: Mapping[str, Sequence[Mapping[str, Any]] | str], limit: int = MAX_FLOWS
) -> dict[str, Any]:
    """Every node's recent flows merged, newest first, at most `limit`; a node whose agent could not be
    read is named with its error (str) instead of flows."""
    merged: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for node, got in sorted(per_node.items()):
        if isinstance(got, str):
            errors[node] = got
            continue
        for rec in got:
            if "verdict" not in rec:  # the agent's "flow logs are off" line
                errors[node] = f"flow logs are {rec.get('mode')}" + (
                    f": {rec['error']}" if rec.get("error") else ""
                )
                continue
            merged.append({**rec, "from": _ref(rec["src"]), "to": _ref(rec["dst"])})
    merged.sort(key=lambda r: (r["end"], r["start"]), reverse=True)
    return {
        "flows": merged[:limit],
        "denied": sum(r["verdict"] == "deny" for r in merged),
        "total": len(merged),
        "errors": errors,
    }


# -------------------------------------------------------------------------------------------- explain


def explain_doc(resources: Sequence[Any], query_string: str) -> dict[str, Any]:
    """`vpcnet policy explain --from F --to T --protocol P [--port N]` over the stored resources: the
    same text, and the command that prints it. BadQuery for a bad parameter or an unknown pod."""
    from vpcnet.policy.evaluate import Flow, endpoint, evaluate
    from vpcnet.policy.model import protocol_from_text
    from vpcnet.policy.state import ClusterState

    query = urllib.parse.parse_qs(query_string)
    src, dst = _one(query, "from"), _one(query, "to")
    protocol = _one(query, "protocol", "TCP")
    port_text = _one(query, "port", "")
    if port_text and not (port_text.isdigit() and int(port_text) <= 65535):
        raise BadQuery(f"port={port_text!r}: expected a number from 0 to 65535")
    port = int(port_text) if port_text else None
    try:
        state = ClusterState.from_resources(resources)
        flow = Flow(endpoint(state, src), endpoint(state, dst), protocol_from_text(protocol), port)
    except (KeyError, ValueError) as exc:
        raise BadQuery(str(exc.args[0]) if exc.args else str(exc)) from exc
    verdict = evaluate(state, flow)
    command = f"vpcnet policy explain --from {src} --to {dst} --protocol {protocol.upper()}"
    if port is not None:
        command += f" --port {port}"
    return {"text": verdict.explanation, "allowed": verdict.allowed, "command": command}
