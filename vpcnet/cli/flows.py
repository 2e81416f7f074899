"""`vpcnet flows` and `vpcnet lab flows`: the flow log, read from the agents' /v1/flows, filtered and shown.

`vpcnet flows` reads the agent of this node (its introspection address); `vpcnet lab flows` reads every lab
node's agent (or one, --node), connecting from inside each node's network namespace (the agents listen
on their own 127.0.0.1). --follow keeps reading as the agents write new windows. Filters (--denied, --pod,
--policy) are applied by the agent and again here.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP

DEFAULT_ADDRESS = "127.0.0.1:61679"


@dataclass
class Source:
    """One agent's /v1/flows answer, read line by line."""

    name: str  # the node, for messages
    sock: socket.socket
    buffer: bytes = b""
    in_body: bool = False


def open_source(name: str, address: str, query: str, netns: str | None, timeout: float | None) -> Source:
    """Connect (from inside netns when given) and send the request."""
    from vpcnet.dataplane import nsenter

    host, _, port = address.rpartition(":")
    if netns is not None:
        with nsenter.entered(f"/run/netns/{netns}"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect((host, int(port)))
        sock.sendall(f"GET /v1/flows?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    except OSError:
        sock.close()
        raise
    sock.settimeout(timeout)
    return Source(name, sock)


def read_lines(source: Source) -> tuple[list[str], bool]:
    """The complete body lines that arrived (one recv), and whether the answer has ended."""
    data = source.sock.recv(65536)
    source.buffer += data
    if not source.in_body:
        head, sep, rest = source.buffer.partition(b"\r\n\r\n")
        if not sep:
            return [], not data
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 200 " not in status + " ":
            raise OSError(f"{source.name}: the agent answered {status!r}: {rest.decode(errors='replace')}")
        source.in_body, source.buffer = True, rest
    *lines, source.buffer = source.buffer.split(b"\n")
    if not data and source.buffer:
        lines.append(source.buffer)
        source.buffer = b""
    return [line.decode() for line in lines if line.strip()], not data


def records(sources: list[Source]) -> Iterator[dict[str, Any]]:
    """Every record of every source as it arrives, until all of them have ended."""
    sel = selectors.DefaultSelector()
    for source in sources:
        sel.register(source.sock, selectors.EVENT_READ, source)
    try:
        while sel.get_map():
            for key, _ in sel.select():
                source = key.data
                lines, ended = read_lines(source)
                for line in lines:
                    doc = json.loads(line)
                    if "enabled" in doc and "verdict" not in doc:
                        reason = f" ({doc['error']})" if doc.get("error") else ""
                        print(f"# {source.name}: flow logs are {doc.get('mode')}{reason}", file=sys.stderr)
                        continue
                    yield doc
                if ended:
                    sel.unregister(source.sock)
                    source.sock.close()
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()


def _end(end: dict[str, Any]) -> str:
    who = f"{end.get('namespace')}/{end['pod']}" if end.get("pod") else str(end.get("ip"))
    return f"{who}:{end['port']}" if end.get("port") is not None else who


def _decided(rec: dict[str, Any]) -> str:
    if rec.get("reason") == "rule":
        return f"{rec['policy']} rule {rec['rule']} (tier {rec['tier']})"
    if rec.get("reason") == "end-of-tier":
        return f"end of tier {rec['tier']}"
    return str(rec.get("reason"))


def table_line(rec: dict[str, Any]) -> str:
    import time

    when = time.strftime("%H:%M:%S", time.localtime(rec["start"]))
    verdict = "DENY " if rec["verdict"] == "deny" else "allow"
    return (
        f"{when} {rec['node']:<10} {verdict} {rec['direction']:<7} {rec['protocol']:<4} "
        f"{_end(rec['src'])} -> {_end(rec['dst'])}  {rec['packets']} pkt {rec['bytes']} B{_counted(rec)}  "
        f"{_decided(rec)}"
    )


def _counted(rec: dict[str, Any]) -> str:
    """The connection's conntrack counters each way, when the record has them (an end record: final)."""
    counts = rec.get("counts")
    if not counts:
        return ""
    orig, reply = counts["orig"], counts["reply"]
    head = "ended, conntrack" if rec.get("event") == "end" else "conntrack"
    out = f"{orig['bytes']} B/{orig['packets']} pkt out"
    return f" ({head} {out}, {reply['bytes']} B/{reply['packets']} pkt back)"


def show(sources: list[Source], output: str, denied: bool, pod: str | None, policy: str | None) -> None:
    from vpcnet.agent.flow_window import FlowFilter

    selected = FlowFilter(denied, pod, policy)
    try:
        for rec in records(sources):
            if not selected.matches(rec):
                continue
            typer.echo(json.dumps(rec) if output == "json" else table_line(rec))
            sys.stdout.flush()
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


def _query(follow: bool, denied: bool, pod: str | None, policy: str | None) -> str:
    params = {"follow": "1" if follow else "0", "denied": "1" if denied else "0"}
    if pod:
        params["pod"] = pod
    if policy:
        params["policy"] = policy
    return urllib.parse.urlencode(params)


def _check(output: str, pod: str | None) -> None:
    if output not in ("table", "json"):
        typer.echo(f"error: --output {output!r}: expected table or json", err=True)
        raise typer.Exit(2)
    if pod is not None and (pod.count("/") != 1 or not all(pod.split("/"))):
        typer.echo(f"error: --pod {pod!r}: expected NAMESPACE/NAME", err=True)
        raise typer.Exit(2)


_OUTPUT = typer.Option("table", "-o", "--output", help="table or json (one record per line)")
_FOLLOW = typer.Option(False, "--follow", "-f", help="keep reading new flows as the agents write them")
_DENIED = typer.Option(False, "--denied", help="denied flows only")
_POD = typer.Option(None, "--pod", help="flows from or to NAMESPACE/NAME")
_POLICY = typer.Option(None, "--policy", help="flows decided by this policy (its id or name)")
_NODE = typer.Option([], "--node", help="only this lab node (repeatable); default all")


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("flows")
    def flows_command(
        output: str = _OUTPUT,
        follow: bool = _FOLLOW,
        denied: bool = _DENIED,
        pod: str | None = _POD,
        policy: str | None = _POLICY,
        address: str = typer.Option(DEFAULT_ADDRESS, help="the agent's introspection address"),
    ) -> None:
        """This node's flow log: flows through its pods, the verdict and the policy and rule that decided."""
        _check(output, pod)
        try:
            source = open_source("agent", address, _query(follow, denied, pod, policy), None, None)
        except OSError as exc:
            typer.echo(f"error: no agent answers at {address} ({exc}); is `vpcnet agent` running?", err=True)
            raise typer.Exit(1) from exc
        show([source], output, denied, pod, policy)

    @groups.lab.command("flows")
    def lab_flows_command(
        output: str = _OUTPUT,
        follow: bool = _FOLLOW,
        denied: bool = _DENIED,
        pod: str | None = _POD,
        policy: str | None = _POLICY,
        node: list[str] = _NODE,
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """The lab's flow logs, from every node's agent (or the --node ones), merged."""
        from vpcnet.lab.kubelet import lab_nodes
        from vpcnet.lab.layout import layout_for

        _check(output, pod)
        try:
            lab = layout_for(prefix)
        except ValueError as exc:
            typer.echo(f"error: --prefix: {exc}", err=True)
            raise typer.Exit(2) from exc
        names = node or [n.name for n in lab_nodes(lab)]
        if not names:
            typer.echo(f"error: lab {lab.prefix!r} is not up (no nodes)", err=True)
            raise typer.Exit(1)
        query = _query(follow, denied, pod, policy)
        sources = []
        for name in names:
            netns = lab.node_netns(name)
            if not os.path.exists(f"/run/netns/{netns}"):
                typer.echo(f"error: --node {name}: no lab node namespace {netns}", err=True)
                raise typer.Exit(2)
            try:
                sources.append(open_source(name, DEFAULT_ADDRESS, query, netns, None))
            except OSError as exc:
                typer.echo(f"error: node {name}: its agent does not answer ({exc})", err=True)
                raise typer.Exit(1) from exc
        show(sources, output, denied, pod, policy)
