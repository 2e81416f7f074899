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
    from vpcnet.lab.sgverdict import SgVerdict
    from vpcnet.policy.evaluate import Flow, Verdict
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


def explain_both(verdict: Verdict, groups: SgVerdict | None) -> str:
    """Network policy's explanation, then the security groups' line; the first line's verdict is both layers'
    and names the layer that denied ("security group", "network policy", or both)."""
    if groups is None:
        return verdict.explanation + "\n  security groups: not judged (an end without an address)"
    layers = [
        name
        for name, ok in (("network policy", verdict.allowed), ("security group", groups.allowed))
        if not ok
    ]
    head = f"{verdict.flow.describe()}: " + (f"DENIED by {' and '.join(layers)}" if layers else "ALLOWED")
    rest = verdict.explanation.split("\n", 1)[1]
    if not groups.reason:
        line = "security groups: not crossed (the flow stays on its node or outside the VPC)"
    else:
        line = groups.reason if not groups.allowed else "security groups: allowed (egress and ingress rules)"
    return f"{head}\n{rest}\n  {line}"


def _lab_groups_verdict(flow: Flow, prefix: str | None) -> SgVerdict | None:
    from vpcnet.cli.resources import CliError, fail, lab_layout
    from vpcnet.lab.eniinfo import lab_security_groups
    from vpcnet.lab.sgverdict import SgFlow, ec2_protocol

    if flow.src.ip is None or flow.dst.ip is None:
        return None
    try:
        view = lab_security_groups(lab_layout(prefix))
        if view is None:
            raise CliError("the lab has no EC2 endpoint to ask (is it up?)", 1)
    except CliError as exc:
        raise fail(exc) from exc
    port = flow.icmp_type if flow.protocol in (1, 58) else flow.dst_port
    return view.verdict(SgFlow(str(flow.src.ip), str(flow.dst.ip), ec2_protocol(flow.protocol), port))


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
        lab: bool = typer.Option(
            False, "--lab", help="also ask the lab VPC's security groups (the pods' addresses from the files)"
        ),
        prefix: str | None = typer.Option(None, "--prefix", help="with --lab: which lab"),
    ) -> None:
        """Allowed or denied, and which layer decided: network policy (tier, policy and rule; source egress,
        destination ingress) and, with --lab, the security groups (the group and direction missing a rule)."""
        from vpcnet.policy.evaluate import Flow, endpoint, evaluate

        state = _load_state(files)
        proto = _protocol(protocol)
        try:
            flow = Flow(
                endpoint(state, src), endpoint(state, dst), proto, port, src_port, icmp_type, icmp_code
            )
        except (KeyError, ValueError) as exc:
            raise _fail(str(exc.args[0]) if exc.args else str(exc)) from exc
        if prefix is not None and not lab:
            raise _fail("--prefix goes with --lab")
        verdict = evaluate(state, flow)
        if not lab:
            typer.echo(verdict.explanation)
            return
        typer.echo(explain_both(verdict, _lab_groups_verdict(flow, prefix)))

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
