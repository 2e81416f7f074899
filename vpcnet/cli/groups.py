"""Sub-command groups that several command modules add to."""

from __future__ import annotations

from dataclasses import dataclass

import typer


@dataclass(frozen=True)
class Groups:
    lab: typer.Typer
    ipam: typer.Typer


def make_groups() -> Groups:
    return Groups(
        lab=typer.Typer(
            help="The local VPC lab: nodes and pods as network namespaces.", no_args_is_help=True
        ),
        ipam=typer.Typer(help="Address management: the node's pool, Calico blocks.", no_args_is_help=True),
    )
