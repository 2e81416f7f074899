"""`vpcnet uninstall`: remove what the agent installed on this node (vpcnet.agent.uninstall)."""

from __future__ import annotations

from pathlib import Path

import typer

from vpcnet.cli.cni import DEFAULT_BIN_DIR, DEFAULT_CONF_DIR
from vpcnet.cli.groups import Groups


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("uninstall")
    def uninstall_command(
        bin_dir: str = typer.Option(DEFAULT_BIN_DIR, "--bin-dir", help="the CNI bin dir vpcnet-cni is in"),
        conf_dir: str = typer.Option(DEFAULT_CONF_DIR, "--conf-dir", help="the CNI config dir"),
        netns: str | None = typer.Option(
            None, "--netns", help="a named network namespace to clean instead of this one (a lab node)"
        ),
    ) -> None:
        """Remove vpcnet from this node: its CNI config and plugin, its iptables chains, ipsets, nftables
        table, and the routes and rules it owns; nothing of another network's. Run it after deleting the
        manifests and draining the node (the pods keep working on the agent's state until then)."""
        from vpcnet.agent.uninstall import UninstallError, uninstall

        try:
            removed = uninstall(Path(bin_dir), Path(conf_dir), netns)
        except UninstallError as exc:
            typer.echo(f"vpcnet uninstall: {exc}", err=True)
            raise typer.Exit(2) from exc
        for line in removed.lines():
            typer.echo(line)
        typer.echo(f"vpcnet uninstall: {len(removed.lines())} item(s) removed")
