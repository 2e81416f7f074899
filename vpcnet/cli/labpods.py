"""`vpcnet lab pods` (what the lab kubelet runs, seen from the nodes) and `vpcnet lab sync` (run it again)."""

from __future__ import annotations

import json
from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP, CliError, fail, lab_layout, report_sync, with_api


def register(app: typer.Typer, groups: Groups) -> None:
    @groups.lab.command("pods")
    def pods_command(
        output: str = typer.Option("table", "--output", "-o", help="table or json"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """The pods the lab kubelet started: node, namespace, address, host veth, ENI, ports."""
        from vpcnet.lab.kubelet import PodRuntime, lab_nodes

        try:
            if output not in ("table", "json"):
                raise CliError(f"--output {output!r}: expected table or json")
            layout = lab_layout(prefix)
            nodes = [n.name for n in lab_nodes(layout)]
            if not nodes:
                raise CliError(f"lab {layout.prefix} is not up", 1)
        except CliError as exc:
            raise fail(exc) from exc
        records = sorted(PodRuntime(layout).records(nodes), key=lambda r: (r.node, r.ref))
        if output == "json":
            rows = [
                {
                    "pod": r.ref,
                    "node": r.node,
                    "netns": r.netns,
                    "ip": r.ip,
                    "interface": r.interface,
                    "eni": r.eni,
                    "containerID": r.container_id,
                    "ports": r.ports,
                }
                for r in records
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("POD", "NODE", "IP", "INTERFACE", "ENI", "PORTS", "NETNS"):
            table.add_column(column)
        for r in records:
            ports = ",".join(f"{p['port']}/{p['protocol']}" for p in r.ports)
            table.add_row(r.ref, r.node, r.ip or "-", r.interface or "-", r.eni or "-", ports or "-", r.netns)
        Console(width=200, soft_wrap=True).print(table)

    @groups.lab.command("sync")
    def sync_command(prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP)) -> None:
        """Run the lab kubelet once: start stored pods that are not running, stop the ones deleted."""
        from vpcnet.lab.kubelet import Kubelet, lab_nodes
        from vpcnet.lab.podsource import ApiPods

        try:
            layout = lab_layout(prefix)
            nodes = lab_nodes(layout)
            if not nodes:
                raise CliError(f"lab {layout.prefix} is not up", 1)

            async def go(store: Any) -> Any:
                return await Kubelet(layout, ApiPods(store), nodes).sync()

            report = with_api(layout, go)
        except CliError as exc:
            raise fail(exc) from exc
        code = report_sync(report)
        if code == 0 and not report.started and not report.stopped:
            typer.echo("every stored pod is running; nothing changed")
        raise typer.Exit(code)
