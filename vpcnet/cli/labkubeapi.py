"""`vpcnet lab kube-apiserver`: the lab's Kubernetes API over etcd (see vpcnet/lab/kubeapi)."""

from __future__ import annotations

from pathlib import Path

import typer

from vpcnet.cli.groups import Groups


def register(app: typer.Typer, groups: Groups) -> None:
    @groups.lab.command("kube-apiserver")
    def kube_apiserver_command(
        etcd: str = typer.Option(
            "", "--etcd", help="etcd endpoints, comma-separated (default: VPCNET_ETCD_ENDPOINTS)"
        ),
        listen: str = typer.Option("127.0.0.1:6443", "--listen", help="host:port to serve plain HTTP on"),
        root: str = typer.Option("/registry", "--root", help="etcd key prefix of the objects"),
        kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="write a kubeconfig here"),  # noqa: B008
    ) -> None:
        """Serve the lab's Kubernetes API (what kubectl, the agents and the lab kubelet talk to)."""
        from vpcnet.lab.kubeapi.server import main

        argv = ["--listen", listen, "--root", root]
        if etcd:
            argv += ["--etcd", etcd]
        if kubeconfig is not None:
            argv += ["--kubeconfig", str(kubeconfig)]
        raise typer.Exit(main(argv))
