"""`vpcnet max-pods`: the EKS AMI max-pods calculator."""

from __future__ import annotations

import typer

from vpcnet.cli.groups import Groups
from vpcnet.ipam.limits import UnknownInstanceType, instance_limits
from vpcnet.ipam.maxpods import MaxPodsError, max_pods


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("max-pods")
    def max_pods_command(
        instance_type: str = typer.Argument(..., help="EC2 instance type, for example m5.large"),
        prefix_delegation: bool = typer.Option(False, "--prefix-delegation", help="/28 prefixes per slot"),
        ipv6: bool = typer.Option(False, "--ipv6", help="IPv6 mode (ENABLE_IPv6; implies prefix delegation)"),
        custom_networking: bool = typer.Option(
            False, "--custom-networking", help="the primary ENI carries no pods"
        ),
        max_eni: int | None = typer.Option(None, "--max-eni", min=1, help="MAX_ENI setting"),
        no_cap: bool = typer.Option(False, "--no-cap", help="do not cap at 110 / 250"),
        pod_eni: bool = typer.Option(
            False, "--pod-eni", help="security groups for pods: the trunk takes an ENI, branches add pods"
        ),
    ) -> None:
        """Print the maximum pods for INSTANCE_TYPE, as the EKS AMI calculator gives it."""
        try:
            limits = instance_limits(instance_type)
            n = max_pods(
                limits,
                prefix_delegation=prefix_delegation,
                ipv6=ipv6,
                custom_networking=custom_networking,
                max_eni=max_eni,
                cap=not no_cap,
                pod_eni=pod_eni,
            )
        except UnknownInstanceType as exc:
            typer.echo(f"error: {exc}; `vpcnet max-pods` knows every type in the bundled EC2 table", err=True)
            raise typer.Exit(2) from exc
        except MaxPodsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(str(n))
