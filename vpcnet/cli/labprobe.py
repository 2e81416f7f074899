"""`vpcnet lab probe` (reachability measured with packets) and `vpcnet lab wait` (agents caught up)."""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.matrix_table import print_matrix
from vpcnet.cli.resources import (
    PREFIX_HELP,
    CliError,
    fail,
    lab_layout,
    load_resources,
    with_api,
    with_store,
)

if TYPE_CHECKING:
    from vpcnet.lab.sgverdict import SgView

PROTOCOLS = ("TCP", "UDP", "SCTP")


def probe_endpoints(layout: Any, version: int | None = None) -> list[Any]:
    """Every running pod of the lab, from the kubelet's records (the kernel's truth, no datastore needed), at
    its first address, or at its address of one family (a pod with none of that family is left out)."""
    from vpcnet.lab.cniexec import result_ips
    from vpcnet.lab.kubelet import PodRuntime, lab_nodes
    from vpcnet.lab.probe import ProbeEndpoint

    nodes = [n.name for n in lab_nodes(layout)]
    if not nodes:
        raise CliError(f"lab {layout.prefix} is not up", 1)
    out = []
    for record in sorted(PodRuntime(layout).records(nodes), key=lambda r: r.ref):
        if not record.ip:
            continue
        addresses = result_ips(record.cni_result) if record.cni_result else [record.ip]
        if version is not None:
            addresses = [a for a in addresses if ipaddress.ip_address(a).version == version]
        if addresses:
            out.append(ProbeEndpoint(record.ref, record.netns_path, addresses[0]))
    return out


def expected_matrix(
    resources: list[Any], refs: list[str], port: int, protocol: str, version: int | None = None
) -> dict[str, dict[str, bool]]:
    """What the policy engine says for every pair of `refs` (between the pods' addresses of `version`, or
    their first ones); a target that does not serve the port (no such containerPort) is expected
    unreachable, since its pod server does not answer there."""
    from vpcnet.api import Pod
    from vpcnet.policy.evaluate import Flow, endpoint, endpoint_in_family, evaluate
    from vpcnet.policy.model import protocol_from_text
    from vpcnet.policy.state import ClusterState

    state = ClusterState.from_resources(resources)
    number = protocol_from_text(protocol)
    serving = {
        r.ref
        for r in resources
        if isinstance(r, Pod)
        and any(p.container_port == port and p.protocol == protocol for c in r.containers for p in c.ports)
    }
    at = {
        ref: endpoint(state, ref) if version is None else endpoint_in_family(state, ref, version)
        for ref in refs
    }
    out: dict[str, dict[str, bool]] = {}
    for src in refs:
        row = out.setdefault(src, {})
        for dst in refs:
            flow = Flow(at[src], at[dst], number, port)
            row[dst] = dst in serving and evaluate(state, flow).allowed
    return out


def security_group_denials(
    view: SgView | None, pods: list[Any], port: int, protocol: str
) -> dict[tuple[str, str], str]:
    """(source, target) -> why the security groups drop the pair's new flows, for each pair they drop."""
    from vpcnet.lab.sgverdict import EC2_PROTOCOLS, SgFlow

    if view is None:
        return {}
    out: dict[tuple[str, str], str] = {}
    for src in pods:
        for dst in pods:
            verdict = view.verdict(SgFlow(src.ip, dst.ip, EC2_PROTOCOLS[protocol], port))
            if not verdict.allowed:
                out[(src.name, dst.name)] = verdict.reason
    return out


def with_security_groups(
    expected: dict[str, dict[str, bool]], denials: dict[tuple[str, str], str]
) -> tuple[dict[str, dict[str, bool]], list[tuple[str, str, str]]]:
    """The policy engine's matrix with the security groups' drops applied, and the pairs policy allows that a
    security group denies (source, target, the group's missing rule)."""
    combined = {src: dict(row) for src, row in expected.items()}
    by_groups = []
    for (src, dst), reason in sorted(denials.items()):
        if combined.get(src, {}).get(dst):
            combined[src][dst] = False
            by_groups.append((src, dst, reason))
    return combined, by_groups


def disagreements(
    measured: dict[str, dict[str, bool]],
    expected: dict[str, dict[str, bool]],
    *,
    ignore_loopback: bool = False,
) -> list[tuple[str, str, bool, bool]]:
    """Cells where the two matrices differ. A pod's traffic to itself never leaves its namespace (no veth, so
    no policy applies in the kernel); the upstream NetworkPolicy tests ignore that diagonal, and so can we."""
    out = []
    for src, row in measured.items():
        for dst, got in row.items():
            if ignore_loopback and src == dst:
                continue
            want = expected.get(src, {}).get(dst)
            if want is not None and want != got:
                out.append((src, dst, got, want))
    return out


def register(app: typer.Typer, groups: Groups) -> None:
    @groups.lab.command("probe")
    def probe_command(
        port: int = typer.Option(80, "--port", min=1, max=65535, help="destination port"),
        protocol: str = typer.Option("TCP", "--protocol", help="TCP, UDP or SCTP"),
        output: str = typer.Option("json", "--output", "-o", help="json, table or svg (a picture)"),
        compare: bool = typer.Option(
            False, "--compare", help="list where the kernel and the policy engine differ"
        ),
        files: list[str] = typer.Option(  # noqa: B008
            [], "--filename", "-f", help="with --compare: policies to evaluate instead of the stored ones"
        ),
        timeout: float = typer.Option(1.0, "--timeout", min=0.05, help="seconds per attempt"),
        attempts: int = typer.Option(
            2, "--attempts", min=1, help="tries before a pair counts as unreachable"
        ),
        ignore_loopback: bool = typer.Option(
            True,
            "--ignore-loopback/--count-loopback",
            help="with --compare: skip a pod's traffic to itself, as the upstream tests do",
        ),
        family: int | None = typer.Option(
            None,
            "--family",
            help="4 or 6: probe between the pods' addresses of this family (a dual-stack pod has one of "
            "each; pods without one are left out), and --compare over it; default: each pod's first address",
        ),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Probe every pod pair with real packets; print the matrix as `vpcnet policy matrix` does."""
        import asyncio

        from vpcnet.lab.probe import probe_matrix

        protocol = protocol.upper()
        try:
            if protocol not in PROTOCOLS:
                raise CliError(f"--protocol {protocol!r}: expected TCP, UDP or SCTP")
            if output not in ("json", "table", "svg"):
                raise CliError(f"--output {output!r}: expected json, table or svg")
            if files and not compare:
                raise CliError("-f POLICIES goes with --compare")
            if family not in (None, 4, 6):
                raise CliError(f"--family {family}: expected 4 or 6")
            layout = lab_layout(prefix)
            pods = probe_endpoints(layout, family)
            if not pods:
                having = f" with an IPv{family} address" if family else ""
                raise CliError(f"lab {layout.prefix} runs no pods{having}; `vpcnet apply -f` some first", 1)
            file_resources = load_resources(files) if files else []
            report = asyncio.run(probe_matrix(pods, pods, port, protocol, timeout=timeout, attempts=attempts))
            measured = report.matrix()
            diffs: list[tuple[str, str, bool, bool]] = []
            by_groups: list[tuple[str, str, str]] = []
            expected = None
            if compare:
                from vpcnet.lab.eniinfo import lab_security_groups

                by_policy = _expected(layout, file_resources, list(measured), port, protocol, family)
                denials = security_group_denials(lab_security_groups(layout), pods, port, protocol)
                expected, by_groups = with_security_groups(by_policy, denials)
                diffs = disagreements(measured, expected, ignore_loopback=ignore_loopback)
        except CliError as exc:
            raise fail(exc) from exc
        if output == "svg":
            from vpcnet.cli.matrix_picture import matrix_svg

            caption = f"{protocol}/{port}, measured with real packets" + (
                ", beside the policy engine" if compare else ""
            )
            typer.echo(matrix_svg(caption, measured, expected, ignore_loopback=ignore_loopback), nl=False)
        elif output == "json" and not compare:
            typer.echo(json.dumps(measured, indent=2))
        elif output == "json":
            body = {
                "measured": measured,
                "disagreements": [{"from": s, "to": d, "measured": g, "expected": w} for s, d, g, w in diffs],
                "denied_by_security_groups": [{"from": s, "to": d, "reason": r} for s, d, r in by_groups],
            }
            typer.echo(json.dumps(body, indent=2))
        else:
            print_matrix(measured, f"{protocol}/{port}, measured with real packets")
            if compare:
                for src, dst, reason in by_groups:
                    typer.echo(f"{src} -> {dst}: policy allows, denied by {reason}")
                for src, dst, got, want in diffs:
                    typer.echo(
                        f"{src} -> {dst}: kernel {'allows' if got else 'blocks'}, "
                        f"policy engine says {'allow' if want else 'block'}"
                    )
                typer.echo(f"{len(diffs)} disagreement(s)")
        if diffs:
            raise typer.Exit(1)

    @groups.lab.command("wait")
    def wait_command(
        timeout: float = typer.Option(30.0, "--timeout", min=0.0, help="give up after this many seconds"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Return once every node's agent has enforced the lab's API as it is now (in etcd mode,
        kube-controllers has mirrored it into etcd first). The API's resourceVersion is the etcd revision, so
        both modes compare the agents' applied revision with etcd's."""
        import time

        from vpcnet.lab.converge import status_path, wait_for_mirror, wait_for_revision
        from vpcnet.lab.kubelet import lab_nodes

        started = time.monotonic()
        try:
            layout = lab_layout(prefix)
            nodes = [n.name for n in lab_nodes(layout)]
            if not nodes:
                raise CliError(f"lab {layout.prefix} is not up", 1)

            async def revision(store: Any) -> int:
                return int(await store.datastore.current_revision())

            mirrored = with_store(layout, revision)
            if lab_datastore(layout) == "kubernetes":  # the agents watch the API: no mirror in between
                seen: int | None = mirrored
            else:
                seen = wait_for_mirror(layout, mirrored, timeout)
            if seen is None or seen < mirrored:
                raise CliError(
                    f"kube-controllers has not mirrored the API up to revision {mirrored} in {timeout:.0f} s "
                    f"(it reports {seen}; `vpcnet lab status`, {layout.run_dir}/kube-controllers.log)",
                    1,
                )
            target = with_store(layout, revision)
        except CliError as exc:
            raise fail(exc) from exc
        result = wait_for_revision(layout, nodes, target, max(0.0, timeout - (time.monotonic() - started)))
        if result.converged:
            typer.echo(f"all {len(nodes)} agents at revision {target} or later ({result.seconds:.2f} s)")
            return
        for node, rev in result.lagging().items():
            where = status_path(layout, node)
            at = (
                f"at revision {rev}"
                if rev is not None
                else f"no status from a live agent in {where}: is its agent running?"
            )
            typer.echo(f"error: node {node}: {at}, waiting for {target}", err=True)
        raise typer.Exit(1)


def lab_datastore(layout: Any) -> str:
    """What the lab's agents read, from its state file ("etcd" for a lab that does not say)."""
    try:
        state = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return "etcd"
    return str(state.get("datastore", "etcd")) if isinstance(state, dict) else "etcd"


def _expected(
    layout: Any, file_resources: list[Any], refs: list[str], port: int, protocol: str, version: int | None
) -> dict[str, dict[str, bool]]:
    from vpcnet.api import ValidationError, parse_resource
    from vpcnet.cli.resources import kind_paths

    async def snapshot(store: Any) -> list[Any]:
        items, _ = await store.snapshot(set(kind_paths().values()))
        return list(items)

    stored = with_api(layout, snapshot)
    broken = [f"{item.ref}: {item.invalid}" for item in stored if item.invalid is not None]
    if broken:
        raise CliError(
            "stored resources that do not decode (the agents deny what they could select; fix or delete "
            "them to compare): " + "; ".join(broken),
            1,
        )
    try:
        resources = [parse_resource(item.body, str(item.ref)) for item in stored]
    except ValidationError as exc:
        raise CliError(f"a stored resource no longer validates: {exc}", 1) from exc
    if file_resources:
        policy_kinds = ("NetworkPolicy", "GlobalNetworkPolicy")
        resources = [r for r in resources if r.KIND not in policy_kinds] + file_resources
    try:
        return expected_matrix(resources, refs, port, protocol, version)
    except ValidationError as exc:
        raise CliError(str(exc)) from exc
