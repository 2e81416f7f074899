"""`vpcnet branch-controller`: security groups for pods (trunk and branch ENIs), the VPC resource
controller's job, over the Kubernetes API and EC2 (vpcnet/controllers/branch_enis.py)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from vpcnet.cli.groups import Groups


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("branch-controller")
    def branch_controller_command(
        kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="the API to read (env KUBECONFIG)"),  # noqa: B008
        region: str = typer.Option("", "--region", help="EC2 region (env AWS_REGION)"),
        endpoint: str = typer.Option("", "--ec2-endpoint", help="EC2 endpoint URL (env AWS_EC2_ENDPOINT)"),
        cluster: str = typer.Option(
            "vpcnet", "--cluster-name", help="tags our branch ENIs; others are left alone"
        ),
        marker: str = typer.Option(
            "", "--marker", hidden=True, help="ignored: names the process for `lab down`"
        ),
    ) -> None:
        """Give each pod a SecurityGroupPolicy selects a branch ENI with its groups on its node's trunk ENI
        (nodes labelled vpc.amazonaws.com/has-trunk-attached), annotate it vpc.amazonaws.com/pod-eni, and
        delete the branches of pods that are gone."""
        import asyncio
        import contextlib

        from vpcnet.cloud.boto_ec2 import Boto3Ec2
        from vpcnet.cloud.branch_ec2 import BranchEc2
        from vpcnet.cloud.ec2 import Ec2Error
        from vpcnet.controllers.branch_enis import BranchController
        from vpcnet.datastore.open import open_kube_store

        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
        if path is None or not path.is_file():
            typer.echo(
                f"error: --kubeconfig {path}: the API's kubeconfig is needed (a readable file)", err=True
            )
            raise typer.Exit(2)
        region = region or os.environ.get("AWS_REGION", "") or os.environ.get("AWS_DEFAULT_REGION", "")
        if not region:
            typer.echo("error: --region (or AWS_REGION) is needed", err=True)
            raise typer.Exit(2)
        try:
            client = Boto3Ec2(region, endpoint_url=endpoint or os.environ.get("AWS_EC2_ENDPOINT") or None)
        except Ec2Error as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc

        async def go() -> None:
            store = await open_kube_store(path)
            try:
                await BranchController(store, BranchEc2(client), cluster).run()
            finally:
                await store.close()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(go())
