"""The `vpcnet` command: one typer app; each concern registers its commands from its own module.

Command modules live beside this file, are listed in COMMAND_MODULES, and expose
`register(app, groups)`: `app` is the top level, `groups` holds the shared sub-command groups
(`vpcnet lab ...`, `vpcnet ipam ...`) that several modules add to. Heavy imports (boto3, pyroute2,
etcd) stay inside the command functions so that `vpcnet --help` and the light commands start fast.
"""

from __future__ import annotations

import importlib

import typer

from vpcnet.cli.groups import make_groups

app = typer.Typer(
    name="vpcnet",
    help="Kubernetes pod networking for AWS VPCs, and a local VPC lab to run it in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


groups = make_groups()
app.add_typer(groups.lab, name="lab")
app.add_typer(groups.ipam, name="ipam")

# Order is the order of `vpcnet --help`.
COMMAND_MODULES = (
    "lab",
    "labpods",
    "labprobe",
    "labkubeapi",
    "kubecontrollers",
    "branchcontroller",
    "demo",
    "agent",
    "resources",
    "policy",
    "flows",
    "console",
    "ipam",
    "poolipam",
    "maxpods",
    "cni",
    "uninstall",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"vpcnet {version('vpcnet')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Kubernetes pod networking for AWS VPCs, and a local VPC lab to run it in."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"vpcnet.cli.{name}").register(app, groups)


_register_all()


def main() -> None:
    app()
