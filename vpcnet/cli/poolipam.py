"""`vpcnet ipam show | check | release`: the Calico-mode pools, blocks and allocations in the datastore.

The datastore is the running lab's (its Kubernetes API, or its etcd when the lab's agents read etcd), else
VPCNET_DATASTORE_ENDPOINTS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP


def _run(prefix: str | None, fn: Any) -> Any:
    import asyncio

    from vpcnet.cli.resources import CliError, datastore_settings, lab_layout, with_api
    from vpcnet.datastore.open import open_datastore
    from vpcnet.datastore.resources import ResourceStore
    from vpcnet.datastore.types import DatastoreError
    from vpcnet.lab.labctl import read_info

    async def go() -> Any:
        datastore = await open_datastore(settings)
        try:
            return await fn(ResourceStore(datastore))
        finally:
            await datastore.close()

    # Printed as `error: ...` with its exit status, never a traceback (no datastore, a bad setting).
    try:
        layout = lab_layout(prefix)
        info = read_info(layout)
        if info is not None and info.datastore == "kubernetes":
            return with_api(layout, fn)
        settings = datastore_settings(layout)
        try:
            return asyncio.run(go())
        except DatastoreError as exc:
            raise CliError(f"datastore: {exc}", 1) from exc
    except CliError as exc:
        _fail(str(exc), exc.code)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


async def show_data(store: Any) -> dict[str, Any]:
    """What `ipam show` prints, from a resource store (ResourceStoreLike)."""
    from vpcnet.ipam.blocks import within
    from vpcnet.ipam.poolstore import read_pool_config, read_state

    config = await read_pool_config(store)
    state = await read_state(store)
    pools = []
    for pool in config.pools:
        blocks = [b for c, (b, _) in state.blocks.items() if within(c, pool.cidr)]
        pools.append(
            {
                "name": pool.name,
                "cidr": str(pool.cidr),
                "blockSize": pool.block_size,
                "encapsulation": pool.encapsulation,
                "mode": pool.encap_mode,
                "natOutgoing": pool.nat_outgoing,
                "disabled": pool.disabled,
                "addresses": pool.cidr.num_addresses,
                "inUse": sum(len(b.allocations) for b in blocks),
                "blocks": len(blocks),
            }
        )
    blocks_out = [
        {
            "cidr": str(cidr),
            "affinity": block.affinity,
            "inUse": len(block.allocations),
            "size": block.size,
            "borrowedOut": sum(1 for a in block.allocations.values() if a.node != block.affinity),
        }
        for cidr, (block, _) in sorted(state.blocks.items(), key=lambda item: (item[0].version, item[0]))
    ]
    nodes = [
        {"name": n.name, "address": str(n.address), "subnet": str(n.subnet), "zone": n.zone}
        for n in sorted(state.nodes.values(), key=lambda n: n.name)
    ]
    return {
        "revision": state.revision,
        "strictAffinity": config.strict_affinity,
        "pools": pools,
        "blocks": blocks_out,
        "nodes": nodes,
    }


def register(app: typer.Typer, groups: Groups) -> None:
    ipam = groups.ipam

    @ipam.command("show")
    def show(
        output: str = typer.Option("table", "-o", "--output", help="table or json"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Calico mode: pools, their blocks (affinity, addresses in use) and the live nodes."""
        if output not in ("table", "json"):
            _fail(f"--output: {output!r}: expected table or json")
        data = _run(prefix, show_data)
        if output == "json":
            typer.echo(json.dumps(data, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        pools = Table("POOL", "CIDR", "BLOCK", "ENCAP", "NAT", "IN USE", "BLOCKS", title="IP pools")
        for p in data["pools"]:
            encap = "none" if p["encapsulation"] == "none" else f"{p['encapsulation']} {p['mode']}"
            in_use = f"{p['inUse']}/{p['addresses']}"
            disabled = " (disabled)" if p["disabled"] else ""
            nat = "yes" if p["natOutgoing"] else "no"
            pools.add_row(
                p["name"] + disabled, p["cidr"], f"/{p['blockSize']}", encap, nat, in_use, str(p["blocks"])
            )
        console.print(pools)
        blocks = Table("BLOCK", "AFFINITY", "IN USE", "BORROWED BY OTHERS", title="Blocks")
        for b in data["blocks"]:
            blocks.add_row(
                b["cidr"], b["affinity"] or "-", f"{b['inUse']}/{b['size']}", str(b["borrowedOut"])
            )
        console.print(blocks)
        nodes = Table("NODE", "ADDRESS", "SUBNET", "ZONE", title="Live nodes")
        for n in data["nodes"]:
            nodes.add_row(n["name"], n["address"], n["subnet"], n["zone"])
        console.print(nodes)

    @ipam.command("check")
    def check_cmd(
        report_path: Annotated[
            Path | None, typer.Option("-o", "--output", help="write the JSON report here")
        ] = None,
        skip_pods: bool = typer.Option(False, "--skip-pod-check", help="do not compare with the Pods stored"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Calico mode: allocations whose pod or node is gone, dangling handles, blocks of gone nodes.
        Exit status 0 when clean, 1 when a problem was found."""
        from vpcnet.ipam.poolgc import check, check_against_pods

        async def go(datastore: Any) -> Any:
            return await (check(datastore, None) if skip_pods else check_against_pods(datastore))

        report = _run(prefix, go)
        data = report.to_json()
        if report_path is not None:
            report_path.write_text(json.dumps(data, indent=2) + "\n")
        typer.echo(f"allocations in use: {report.allocations_in_use}")
        for leak in report.leaked:
            who = f"{leak.namespace}/{leak.pod}" if leak.pod else leak.handle
            typer.echo(f"leaked: {leak.address} ({who} on {leak.node}): {leak.reason}")
        for handle in report.dangling_handles:
            typer.echo(f"dangling handle: {handle}")
        for block in report.gone_node_blocks:
            typer.echo(
                f"block {block['block']} affine to gone node {block['node']} ({block['allocations']} in use)"
            )
        for problem in report.inconsistent:
            typer.echo(f"inconsistent: {problem}")
        typer.echo(
            "clean"
            if report.clean
            else "problems found" + (f"; report in {report_path}" if report_path else "")
        )
        if not report.clean:
            raise typer.Exit(1)

    @ipam.command("release")
    def release_cmd(
        from_report: Annotated[
            Path, typer.Option("--from-report", help="a report written by `vpcnet ipam check -o`")
        ],
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Calico mode: release the leaked addresses a check report lists (only those unchanged since)."""
        from vpcnet.ipam.poolgc import release_from_report

        try:
            report = json.loads(from_report.read_text())
        except OSError as exc:
            _fail(f"--from-report {from_report}: cannot read: {exc.strerror or exc}")
        except ValueError as exc:
            _fail(f"--from-report {from_report}: not JSON: {exc}")
        if not isinstance(report, dict):
            _fail(f"--from-report {from_report}: not a check report (expected a JSON object)")

        async def go(datastore: Any) -> Any:
            return await release_from_report(datastore, report)

        try:
            result = _run(prefix, go)
        except ValueError as exc:
            _fail(f"--from-report {from_report}: {exc}")
        for address in result.released:
            typer.echo(f"released {address}")
        for address in result.skipped:
            typer.echo(f"skipped {address} (changed since the report)")
        for handle in result.handles_deleted:
            typer.echo(f"deleted dangling handle {handle}")
        typer.echo(f"{len(result.released)} released, {len(result.skipped)} skipped")
        sys.stdout.flush()
