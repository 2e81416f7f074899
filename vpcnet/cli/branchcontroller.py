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
        kubeconfig: Path | None = typer.Option(  # noqa: B008
            None,
            "--kubeconfig",
            help="the API to read (else KUBECONFIG, else in-cluster, else ~/.kube/config)",
        ),
        region: str = typer.Option("", "--region", help="EC2 region (env AWS_REGION)"),
        endpoint: str = typer.Option("", "--ec2-endpoint", help="EC2 endpoint URL (env AWS_EC2_ENDPOINT)"),
        cluster: str = typer.Option(
            "vpcnet",
            "--cluster-name",
            envvar="CLUSTER_NAME",
            help="tags our branch ENIs; others are left alone (empty: vpcnet)",
        ),
        cooldown: float = typer.Option(
            60.0,
            "--branch-eni-cooldown",
            envvar="BRANCH_ENI_COOLDOWN",
            help="seconds a gone pod's branch keeps its VLAN id before reuse or deletion (EKS: at least 30)",
        ),
        reuse_window: float = typer.Option(
            60.0,
            "--branch-reuse-window",
            envvar="BRANCH_ENI_REUSE_WINDOW",
            help="seconds a cooled branch waits for a new pod with its groups on its node before deletion",
        ),
        marker: str = typer.Option(
            "", "--marker", hidden=True, help="ignored: names the process for `lab down`"
        ),
    ) -> None:
        """Give each pod a SecurityGroupPolicy selects a branch ENI with its groups on its node's trunk ENI
        (nodes labelled vpc.amazonaws.com/has-trunk-attached), annotate it vpc.amazonaws.com/pod-eni, and
        release the branches of pods that are gone (cool-down, then reuse or deletion)."""
        import asyncio
        import contextlib

        from vpcnet.cloud.boto_ec2 import Boto3Ec2
        from vpcnet.cloud.branch_ec2 import BranchEc2
        from vpcnet.cloud.ec2 import Ec2Error
        from vpcnet.controllers.branch_cooldown import CoolDown, eks_cooldown
        from vpcnet.controllers.branch_enis import BranchController
        from vpcnet.datastore.kube import KubeResourceStore
        from vpcnet.datastore.kube_client import KubeApi
        from vpcnet.datastore.kube_settings import KubeSettings, KubeSettingsError

        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if kubeconfig is not None and not kubeconfig.is_file():
            typer.echo(f"error: --kubeconfig {kubeconfig}: not a readable file", err=True)
            raise typer.Exit(2)
        try:  # in a pod (deploy/branch-controller.yaml): its service account's token and CA
            kube = KubeSettings(kubeconfig) if kubeconfig is not None else KubeSettings.from_env()
        except KubeSettingsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        region = region or os.environ.get("AWS_REGION", "") or os.environ.get("AWS_DEFAULT_REGION", "")
        if not region:
            typer.echo("error: --region (or AWS_REGION) is needed", err=True)
            raise typer.Exit(2)
        try:
            timing = CoolDown(eks_cooldown(cooldown), reuse_window)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        try:
            client = Boto3Ec2(region, endpoint_url=endpoint or os.environ.get("AWS_EC2_ENDPOINT") or None)
        except Ec2Error as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc

        cluster = cluster or "vpcnet"

        async def go() -> None:
            store = KubeResourceStore(await KubeApi.connect(kube))
            try:
                await BranchController(store, BranchEc2(client), cluster, timing).run()
            finally:
                await store.close()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(go())
