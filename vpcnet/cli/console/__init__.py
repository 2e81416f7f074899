"""`vpcnet console` and `vpcnet lab console`: a read-only web page of the network, served on 127.0.0.1.

The page (page.py) fetches JSON from the server (server.py), which assembles it (data.py, pure) from what
the sources read (sources.py): the lab's EC2 state and pods, the agents' introspection, the Kubernetes API.
"""

from __future__ import annotations

from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP

DEFAULT_PORT = 61690
_PORT = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="the port to serve the page on")
_HOST = typer.Option(
    "127.0.0.1", "--host", help="the address to listen on (the console is read-only but unauthenticated)"
)


def run(sources: Any, host: str, port: int) -> None:
    import asyncio

    from vpcnet.cli.console.server import serve

    def ready(url: str) -> None:
        typer.echo(f"vpcnet console at {url} (read-only; Ctrl-C stops it)")

    try:
        asyncio.run(serve(sources, f"{host}:{port}", ready))
    except OSError as exc:
        typer.echo(f"error: cannot serve on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("console")
    def console_command(
        port: int = _PORT,
        host: str = _HOST,
        address: str = typer.Option("127.0.0.1:61679", help="this node's agent (introspection address)"),
        kubeconfig: str | None = typer.Option(
            None, "--kubeconfig", envvar="KUBECONFIG", help="the cluster's API, for pods and policies"
        ),
        node: str | None = typer.Option(None, "--node", help="this node's name (default: the host name)"),
    ) -> None:
        """A web page of this node: its ENIs, addresses and pods, the policy matrix, its live flows."""
        import socket
        from pathlib import Path

        from vpcnet.cli.console.sources import NodeSources

        agent_host, _, agent_port = address.rpartition(":")
        if not agent_host or not agent_port.isdigit():
            typer.echo(f"error: --address {address!r}: expected HOST:PORT", err=True)
            raise typer.Exit(2)
        path = Path(kubeconfig) if kubeconfig else None
        if path is not None and not path.exists():
            typer.echo(f"error: --kubeconfig {kubeconfig}: no such file", err=True)
            raise typer.Exit(2)
        run(NodeSources(node or socket.gethostname(), (agent_host, int(agent_port)), path), host, port)

    @groups.lab.command("console")
    def lab_console_command(
        port: int = _PORT,
        host: str = _HOST,
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """A web page of the lab: the VPC, the policy matrix beside probes, live flows with explanations."""
        from vpcnet.cli.console.sources import LabSources
        from vpcnet.cli.resources import CliError, fail, lab_layout
        from vpcnet.lab.kubelet import lab_nodes

        try:
            layout = lab_layout(prefix)
        except CliError as exc:
            raise fail(exc) from exc
        if not lab_nodes(layout):
            typer.echo(f"error: lab {layout.prefix} is not up (`vpcnet lab up`)", err=True)
            raise typer.Exit(1)
        run(LabSources(layout), host, port)
