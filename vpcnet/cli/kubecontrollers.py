"""`vpcnet kube-controllers`: mirror the Kubernetes kinds from the API into the etcd datastore."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from vpcnet.cli.groups import Groups


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("kube-controllers")
    def kube_controllers_command(
        kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="the API to read (env KUBECONFIG)"),  # noqa: B008
        progress_file: Path | None = typer.Option(  # noqa: B008
            None, "--progress-file", help="write {revision: R} here as the mirror catches up"
        ),
        marker: str = typer.Option(
            "", "--marker", hidden=True, help="ignored: names the process for `lab down`"
        ),
    ) -> None:
        """Mirror Pods, Namespaces, Nodes, ServiceAccounts, NetworkPolicies and the Calico and ENIConfig
        custom resources from the Kubernetes API into etcd (VPCNET_DATASTORE_ENDPOINTS), leader-elected."""
        from vpcnet.controllers.kubecontrollers import main
        from vpcnet.datastore.settings import DatastoreSettingsError, read_datastore_settings

        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
        if path is None:
            typer.echo("error: --kubeconfig (or KUBECONFIG) names the API to mirror", err=True)
            raise typer.Exit(2)
        if not path.is_file():
            typer.echo(f"error: --kubeconfig {path}: not a readable file", err=True)
            raise typer.Exit(2)
        try:
            settings = read_datastore_settings({**os.environ, "VPCNET_DATASTORE_TYPE": "etcd"})
        except DatastoreSettingsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        main(path, settings, progress_file)
