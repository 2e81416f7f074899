"""`vpcnet ipam status`: the node's address pool, read from the agent's introspection endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP

DEFAULT_ADDRESS = "127.0.0.1:61679"


def fetch_status(address: str, timeout: float = 5.0) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/v1/ipam", timeout=timeout) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def render(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # piped or captured (logs, `ip netns exec` from a script): rich would squeeze the table into 80
    # columns and cut ENI ids and addresses short; print it whole instead
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=240)
    mode = "prefixes" if doc.get("prefixDelegation") else "secondary IPs"
    console.print(
        f"[bold]{doc['instanceId']}[/] {doc['instanceType']} ({mode}): {doc['totalIPs']} addresses,"
        f" {doc['assignedIPs']} assigned, {doc['coolingIPs']} cooling, {doc['availableIPs']} available,"
        f" target {doc['targetIPs']}; max {doc['maxENIs']} ENIs / {doc['maxIPs']} addresses"
        f" / {doc['maxPods']} pods"
    )
    table = Table()
    for col in (
        "ENI",
        "device",
        "table",
        "primary IP",
        "subnet",
        "prefixes",
        "addresses",
        "assigned",
        "cooling",
    ):
        table.add_column(col)
    for e in doc["ENIs"]:
        table.add_row(
            e["id"] + (" (primary)" if e["isPrimary"] else ""),
            str(e["deviceNumber"]),
            str(e["routeTableId"]),
            e["primaryIP"],
            f"{e['subnet']} {e['subnetCIDR']}",
            " ".join(e["prefixes"]) or "-",
            str(e["addresses"]),
            str(e["assigned"]),
            str(e["cooling"]),
        )
    console.print(table)
    if doc.get("lastError"):
        console.print(f"[red]last EC2 error:[/] {doc['lastError']}")


def register(app: typer.Typer, groups: Groups) -> None:
    @groups.ipam.command("status")
    def status_command(
        output: str = typer.Option("table", "-o", "--output", help="table or json"),
        address: str = typer.Option(DEFAULT_ADDRESS, help="the agent's introspection address"),
        node: str | None = typer.Option(None, "--node", help="a lab node: run inside its namespace"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
        lab_prefix: str | None = typer.Option(None, "--lab-prefix", hidden=True),  # the old name
    ) -> None:
        """Show the node's address pool: ENIs, addresses, prefixes, assigned, cooling."""
        if output not in ("table", "json"):
            typer.echo(f"error: --output {output!r}: expected table or json", err=True)
            raise typer.Exit(2)
        if node is not None:
            from vpcnet.lab.labctl import layout_for

            try:
                lab = layout_for(prefix or lab_prefix)
            except ValueError as exc:
                typer.echo(f"error: --prefix: {exc}", err=True)
                raise typer.Exit(2) from exc
            argv = [
                sys.executable,
                "-c",
                "from vpcnet.cli.main import main; main()",
                "ipam",
                "status",
                "-o",
                output,
                "--address",
                address,
            ]
            netns = lab.node_netns(node)
            if not os.path.exists(f"/run/netns/{netns}"):
                typer.echo(f"error: --node {node}: no lab node namespace {netns}", err=True)
                raise typer.Exit(2)
            rc = subprocess.call(["ip", "netns", "exec", netns, *argv])
            raise typer.Exit(rc)
        try:
            doc = fetch_status(address)
        except OSError as exc:  # urllib's URLError is an OSError
            typer.echo(
                f"error: no agent answers at {address} ({exc}); is `vpcnet agent` running here?", err=True
            )
            raise typer.Exit(1) from exc
        if output == "json":
            typer.echo(json.dumps(doc, indent=1))
        else:
            render(doc)
