"""`vpcnet demo`: the tour `make demo` gives. Every step is a `vpcnet` or `kubectl` command a user could
type, printed before it runs; the lab is torn down at the end even when a step fails. Objects go in through
kubectl (the lab serves a Kubernetes API); `vpcnet lab ...` shows what kubectl cannot (real packets)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from vpcnet.cli.groups import Groups

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"


# The lab's internet host answers with the source address it sees.
INTERNET_PAGE = "http://198.51.100.100/"


class DemoStepFailed(Exception):
    pass


def _vpcnet(*args: str, check: bool = True) -> None:
    typer.secho(f"\n$ vpcnet {shlex.join(args)}", fg=typer.colors.CYAN, bold=True)
    done = subprocess.run([sys.executable, "-m", "vpcnet.cli", *args], check=False)
    if check and done.returncode != 0:
        raise DemoStepFailed(f"`vpcnet {shlex.join(args)}` exited {done.returncode}")


def _kubectl(kubeconfig: str, *args: str, check: bool = True) -> None:
    from vpcnet.lab.kubectl import find_kubectl

    binary = find_kubectl()
    if binary is None:
        raise DemoStepFailed("kubectl is not installed (Debian's kubernetes-client; `make deps` installs it)")
    typer.secho(f"\n$ kubectl --kubeconfig {kubeconfig} {shlex.join(args)}", fg=typer.colors.CYAN, bold=True)
    done = subprocess.run([binary, "--kubeconfig", kubeconfig, *args], check=False)
    if check and done.returncode != 0:
        raise DemoStepFailed(f"`kubectl {shlex.join(args)}` exited {done.returncode}")


def _say(text: str) -> None:
    typer.secho(f"\n# {text}", fg=typer.colors.YELLOW)


def run_demo(nodes: int, keep: bool, kubeconfig: str) -> None:
    pods = str(EXAMPLES / "pods.yaml")
    policy = str(EXAMPLES / "policy.yaml")
    try:
        _say(
            "A VPC with a subnet per availability zone; each node is an EC2 instance in a network namespace."
        )
        _vpcnet("lab", "up", "--nodes", str(nodes))
        _vpcnet("lab", "status")
        _say("The lab serves a Kubernetes API: kubectl sees its nodes (InternalIP, zone, instance type).")
        _kubectl(kubeconfig, "get", "nodes", "-o", "wide", "-L", "topology.kubernetes.io/zone")
        _say("Pods get real VPC addresses from the node's warm pool of ENI secondary addresses.")
        _kubectl(kubeconfig, "apply", "-f", pods)
        _vpcnet("lab", "sync")  # the lab kubelet has started them (it watches the API; this waits for it)
        _kubectl(kubeconfig, "get", "pods", "-A", "-o", "wide")
        _vpcnet("ipam", "status", "--node", "node1")
        _say("Every pod reaches every other, on one node, across nodes and across AZs: real packets.")
        _vpcnet("lab", "probe", "--port", "80", "--protocol", "TCP", "-o", "table")
        _say("Network policy: billing takes nothing, except its ledger from the shop's cart.")
        _kubectl(kubeconfig, "apply", "-f", policy)
        _kubectl(kubeconfig, "get", "networkpolicies", "-A")
        _say("the agents watch the lab's API (the Kubernetes datastore); `lab wait` waits for them.")
        _vpcnet("lab", "wait")
        _vpcnet("lab", "probe", "--port", "80", "--protocol", "TCP", "-o", "table")
        _say("The kernel and the policy engine agree on every pair:")
        _vpcnet("lab", "probe", "--port", "80", "--protocol", "TCP", "--compare", "-o", "table")
        _vpcnet(
            "policy",
            "explain",
            "-f",
            pods,
            "-f",
            policy,
            "--from",
            "shop/web",
            "--to",
            "billing/ledger",
            "--port",
            "80",
            "--protocol",
            "TCP",
        )
        _say("Traffic leaving the VPC is SNATed to the node's primary address (the internet host echoes it).")
        _vpcnet(
            "lab", "exec", "shop/web", "--", "busybox", "wget", "-q", "-O", "-", INTERNET_PAGE, check=False
        )
        _vpcnet("lab", "exec", "node3", "--", "iptables", "-t", "nat", "-S", "AWS-SNAT-CHAIN-0", check=False)
    except DemoStepFailed as exc:
        typer.secho(f"\ndemo failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    finally:
        if not keep:
            _say("Tearing the lab down: every namespace, process and file it made.")
            _vpcnet("lab", "down", check=False)


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("demo")
    def demo_command(
        nodes: int = typer.Option(3, "--nodes", min=1, max=8, help="lab nodes"),
        keep: bool = typer.Option(False, "--keep", help="leave the lab up afterwards"),
    ) -> None:
        """A guided tour: a lab VPC, pods with VPC addresses, real packets, network policy; then teardown."""
        from vpcnet.lab.labctl import layout_for

        if os.geteuid() != 0:
            typer.echo("error: the lab makes network namespaces: run as root", err=True)
            raise typer.Exit(2)
        try:
            layout = layout_for()
        except ValueError as exc:
            typer.echo(f"error: VPCNET_LAB: {exc}", err=True)
            raise typer.Exit(2) from exc
        # The demo ends with `lab down`: never take down (or pour pods into) a lab it did not make.
        if layout.run_dir.exists():
            typer.echo(
                f"error: lab {layout.prefix} is already up ({layout.run_dir}); the demo brings up and "
                "removes a lab of its own: run `vpcnet lab down` first, or set VPCNET_LAB to another name",
                err=True,
            )
            raise typer.Exit(2)
        run_demo(nodes, keep, str(layout.kubeconfig))
