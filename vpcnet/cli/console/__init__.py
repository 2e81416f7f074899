"""`vpcnet console` and `vpcnet lab console`: a read-only web page of the network, served on 127.0.0.1.

The page (page.py) fetches JSON from the server (server.py), which assembles it (data.py, pure) from what
the sources read: the lab's EC2 state, pods and agents (sources.py), or a cluster's datastore and its
node agents (cluster.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP

DEFAULT_PORT = 61690
_PORT = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="the port to serve the page on")
_AGENT = typer.Option([], "--agent", help="NODE=HOST:PORT: where that node's agent answers (repeatable)")
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


def _cluster_settings(kubeconfig: str | None) -> Any:
    """The datastore to read: the Kubernetes API of --kubeconfig, else what the environment says (the
    agents' rule, vpcnet.datastore.settings). ValueError names a bad setting or a missing file."""
    import os

    from vpcnet.datastore.kube_settings import KubeSettings
    from vpcnet.datastore.settings import DatastoreSettings, DatastoreType, read_datastore_settings

    if kubeconfig is not None:
        path = Path(kubeconfig)
        if not path.is_file():
            raise ValueError(f"--kubeconfig {kubeconfig}: no such file")
        return DatastoreSettings(type=DatastoreType.KUBERNETES, kube=KubeSettings(path))
    return read_datastore_settings(os.environ)


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("console")
    def console_command(
        port: int = _PORT,
        host: str = _HOST,
        kubeconfig: str | None = typer.Option(
            None,
            "--kubeconfig",
            help="read the cluster over this Kubernetes API (else VPCNET_DATASTORE_TYPE, "
            "VPCNET_DATASTORE_ENDPOINTS and KUBECONFIG say, as for the agents)",
        ),
        agent_port: int = typer.Option(
            61679,
            "--agent-port",
            min=1,
            max=65535,
            help="the agents' introspection port, at each node's address",
        ),
        agent: list[str] = _AGENT,
        netns: str | None = typer.Option(
            None, "--netns", help="reach the agents from inside this network namespace (/run/netns/NAME)"
        ),
    ) -> None:
        """A web page of a cluster from its datastore and its node agents: the nodes with their ENIs,
        addresses and pods, the policy matrix, the live flows with their explanations."""
        from vpcnet.cli.console.cluster import ClusterSources, parse_agent

        try:
            settings = _cluster_settings(kubeconfig)
            agents = dict(parse_agent(a) for a in agent)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if netns is not None and not Path(f"/run/netns/{netns}").exists():
            typer.echo(f"error: --netns {netns}: no such network namespace (/run/netns/{netns})", err=True)
            raise typer.Exit(2)
        run(ClusterSources(settings, agent_port, agents, netns), host, port)

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
