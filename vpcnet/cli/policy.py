"""`vpcnet policy ...`: reachability matrix, explain one flow, test a selector (pure, offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.matrix_table import print_matrix

if TYPE_CHECKING:
    from vpcnet.api.base import ResourceKey
    from vpcnet.policy.model import Direction, Policy
    from vpcnet.policy.state import ClusterState

FILES_HELP = "YAML file with Namespaces, Pods and policies (repeatable; '-' reads standard input)"
_FILES_OPTION = typer.Option([], "-f", "--file", help=FILES_HELP)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load_state(files: list[str]) -> ClusterState:
    from vpcnet.api import ValidationError, load_documents
    from vpcnet.api.errors import Fault
    from vpcnet.policy.state import ClusterState

    if not files:
        raise _fail("give at least one -f FILE")
    resources = []
    faults: list[Fault] = []
    sources: dict[ResourceKey, list[str]] = {}  # where each object is defined, to name duplicates
    for name in files:
        source = "<stdin>" if name == "-" else name
        try:
            text = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            faults.append(Fault(name, "", f"cannot read: {exc.strerror or exc}"))
            continue
        try:
            loaded = load_documents(text, source)
        except ValidationError as exc:
            faults += exc.faults
            continue
        resources += loaded
        for resource in loaded:
            sources.setdefault(resource.key, []).append(source)
    for key, where in sources.items():
        if len(where) > 1:
            faults.append(Fault(str(key), "", f"defined more than once (in {', '.join(where)})"))
    try:
        if faults:
            raise ValidationError(faults)
        return ClusterState.from_resources(resources)
    except ValidationError as exc:
        raise _fail(str(exc)) from exc


def _protocol(text: str) -> int:
    from vpcnet.policy.model import protocol_from_text

    try:
        return protocol_from_text(text)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _origin(policy: Policy, direction: Direction, index: int) -> str:
    """Where a compiled rule came from, for policies whose rules do not map one to one (Kubernetes)."""
    from vpcnet.policy.model import Direction

    origins = policy.ingress_origins if direction is Direction.INGRESS else policy.egress_origins
    if not origins:
        return ""
    return f" (from spec.{direction.value.lower()}[{policy.spec_rule_index(direction, index)}])"


def register(app: typer.Typer, groups: Groups) -> None:
    policy_app = typer.Typer(
        help="Network policy, offline: who can reach whom, and which rule decides.", no_args_is_help=True
    )
    app.add_typer(policy_app, name="policy")

    @policy_app.command("matrix")
    def matrix_command(
        files: list[str] = _FILES_OPTION,
        port: int = typer.Option(..., "--port", min=0, max=65535, help="destination port"),
        protocol: str = typer.Option("TCP", "--protocol", help="TCP, UDP, SCTP or a protocol number"),
        output: str = typer.Option("table", "-o", "--output", help="table or json"),
    ) -> None:
        """Reachability between every pair of pods: rows are sources, columns destinations."""
        from vpcnet.policy.matrix import reachability

        if output not in ("table", "json"):
            raise _fail(f"--output must be table or json, got {output!r}")
        state = _load_state(files)
        result = reachability(state, port, _protocol(protocol))
        if output == "json":
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        print_matrix(result.to_dict(), f"{protocol.upper()}/{port}")

    @policy_app.command("explain")
    def explain_command(
        files: list[str] = _FILES_OPTION,
        src: str = typer.Option(..., "--from", help="source: NAMESPACE/POD or an IP address"),
        dst: str = typer.Option(..., "--to", help="destination: NAMESPACE/POD or an IP address"),
        port: int | None = typer.Option(None, "--port", min=0, max=65535, help="destination port"),
        protocol: str = typer.Option("TCP", "--protocol", help="TCP, UDP, SCTP, ICMP, ... or a number"),
        src_port: int | None = typer.Option(None, "--source-port", min=0, max=65535),
        icmp_type: int | None = typer.Option(None, "--icmp-type", min=0, max=255),
        icmp_code: int | None = typer.Option(None, "--icmp-code", min=0, max=255),
    ) -> None:
        """Allowed or denied, and which tier, policy and rule decided (source egress, destination ingress)."""
        from vpcnet.policy.evaluate import Flow, endpoint, evaluate

        state = _load_state(files)
        proto = _protocol(protocol)
        try:
            flow = Flow(
                endpoint(state, src), endpoint(state, dst), proto, port, src_port, icmp_type, icmp_code
            )
        except (KeyError, ValueError) as exc:
            raise _fail(str(exc.args[0]) if exc.args else str(exc)) from exc
        verdict = evaluate(state, flow)
        typer.echo(verdict.explanation)

    @policy_app.command("show")
    def show_command(
        files: list[str] = _FILES_OPTION,
        pod: str | None = typer.Option(None, "--pod", help="only what applies to NAMESPACE/POD, in order"),
    ) -> None:
        """The compiled rule model: tiers, policies (ids, order, selector) and their rules."""
        from vpcnet.policy.calc import group_by_tier, policies_for_endpoint
        from vpcnet.policy.model import Direction

        state = _load_state(files)
        if pod is None:
            for tier in group_by_tier(state, state.policies):
                typer.echo(
                    f"tier {tier.tier.name} (order {tier.tier.order}, default {tier.tier.default_action})"
                )
                for policy in tier.policies:
                    types = ",".join(sorted(policy.types))
                    typer.echo(f"  {policy.id} order {policy.order} types {types}")
                    typer.echo(f"    selector {policy.selector.canonical}")
                    for direction in Direction:
                        for i, rule in enumerate(policy.rules(direction)):
                            origin = _origin(policy, direction, i)
                            typer.echo(f"    {direction.value.lower()}[{i}] {rule.describe()}{origin}")
            return
        try:
            target = state.pod(pod)
        except KeyError as exc:
            raise _fail(str(exc.args[0])) from exc
        for direction in Direction:
            tiers = policies_for_endpoint(state, target, direction)
            typer.echo(
                f"{direction.value}:" + ("" if tiers else " no policy selects the pod (default allow)")
            )
            for tier in tiers:
                typer.echo(f"  tier {tier.tier.name} (default {tier.tier.default_action})")
                for policy in tier.policies:
                    typer.echo(f"    {policy.id} (order {policy.order})")
                    for i, rule in enumerate(policy.rules(direction)):
                        typer.echo(f"      [{i}] {rule.describe()}{_origin(policy, direction, i)}")

    @policy_app.command("selector")
    def selector_command(
        expression: str = typer.Argument(
            ..., help="a Calico selector, e.g. \"app == 'web' && !has(canary)\""
        ),
        labels: str = typer.Option("", "--labels", help="k=v,k2=v2"),
    ) -> None:
        """Does EXPRESSION select an endpoint with these labels? Prints true or false."""
        from vpcnet.api.selector import SelectorError, parse_selector

        try:
            sel = parse_selector(expression)
        except SelectorError as exc:
            typer.echo(f"error: invalid selector: {exc.message} at position {exc.position}", err=True)
            typer.echo(exc.pointer(), err=True)
            raise typer.Exit(2) from exc
        label_map: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in labels.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise _fail(f"--labels entries look like key=value, got {item!r}")
            label_map[key] = value
        typer.echo("true" if sel.matches(label_map) else "false")
