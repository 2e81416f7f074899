"""`vpcnet lab up|down|status|exec|logs`: the local VPC lab. The lab's prefix comes from --prefix, else the
VPCNET_LAB environment variable, else "vpcl"."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from vpcnet.cli.groups import Groups
from vpcnet.cli.resources import PREFIX_HELP


def _layout(prefix: str | None) -> Any:
    from vpcnet.lab.labctl import layout_for

    try:
        return layout_for(prefix)
    except ValueError as e:
        typer.echo(f"error: --prefix: {e}", err=True)
        raise typer.Exit(2) from e


def _need_root() -> None:
    if os.geteuid() != 0:
        typer.echo("error: the lab needs root (network namespaces); run as root", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer, groups: Groups) -> None:
    lab = groups.lab

    @lab.command("up")
    def up_command(
        ctx: typer.Context,
        nodes: int = typer.Option(3, "--nodes", "-n", help="number of nodes (instances)"),
        instance_type: str = typer.Option(
            "t3.medium", "--instance-type", "-t", help="the nodes' instance type"
        ),
        azs: int = typer.Option(2, "--azs", help="availability zones (one node subnet each)"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
        pod_subnets: bool = typer.Option(
            False, "--pod-subnets", help="also a pod subnet per AZ (for custom networking / ENIConfig)"
        ),
        agents: bool = typer.Option(True, "--agents/--no-agents", help="start `vpcnet agent` on every node"),
        mode: str | None = typer.Option(
            None, "--mode", help="the agents' mode: vpc (addresses from ENIs, default) or calico (pools)"
        ),
        agent_env: list[str] = typer.Option(  # noqa: B008
            [], "--agent-env", "-e", help="KEY=VALUE for every node agent (VPC CNI knobs...), repeatable"
        ),
        ip_family: str = typer.Option(
            "ipv4",
            "--ip-family",
            help="ipv4; dual (an IPv6 /56 in the VPC, a /64 per subnet, nodes dual stack; with --mode "
            "calico, dual-stack pods); ipv6 (dual, and IPv6 pods: VPC mode's ENABLE_IPv6 with prefix "
            "delegation, or Calico mode's IPv6 pool)",
        ),
        datastore: str | None = typer.Option(
            None,
            "--datastore",
            help="what the agents read: kubernetes (the lab's API; the default) or etcd (kube-controllers "
            "mirrors the API into it)",
        ),
        restart_backoff: str = typer.Option(
            "0.5:30",
            "--restart-backoff",
            help="INITIAL:MAX seconds: a node agent that exits is restarted after INITIAL, doubling to MAX "
            "while it keeps failing (the kubelet's CrashLoopBackOff is 10:300)",
        ),
        image: Path | None = typer.Option(  # noqa: B008
            None,
            "--image",
            help="run the node agents from this OCI archive (`make image`) as containers of a private "
            "containerd, shaped by deploy/'s DaemonSet and ConfigMap, instead of as processes",
        ),
        etcd_tls: bool = typer.Option(
            False,
            "--etcd-tls",
            help="etcd serves TLS only and asks every client for a certificate (made for the lab: a CA, "
            "etcd's, and the client one the agents, the lab's API and the CLI use)",
        ),
    ) -> None:
        """Bring the lab up: a VPC with a subnet per AZ, nodes as namespaces, the EC2 endpoint, IMDS and etcd.
        Running it again with the lab up changes nothing but restarting what died; options not given then
        mean what the lab was made with (its state records them), so a repair needs no flags repeated."""
        from rich.console import Console

        from vpcnet.ipam.limits import UnknownInstanceType, instance_limits
        from vpcnet.lab.labctl import LabError, read_info, recorded_options, up
        from vpcnet.lab.topology import TopologyError, build_topology

        _need_root()
        layout = _layout(prefix)
        settings = _agent_settings(mode, agent_env)
        settings = family_settings(ip_family, settings) | settings
        pods_per_az = int(pod_subnets)
        try:
            existing = read_info(layout)
        except LabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if existing is not None:  # a repair: what was not given on this command line is what the lab has
            given = _given(ctx)
            was = recorded_options(existing)
            nodes = nodes if "nodes" in given else was.nodes
            instance_type = instance_type if "instance_type" in given else was.instance_type
            azs = azs if "azs" in given else was.azs
            pods_per_az = int(pod_subnets) if "pod_subnets" in given else was.pod_subnets
            agents = agents if "agents" in given else was.agents
            if not given & {"mode", "agent_env", "ip_family"}:
                settings = was.agent_settings
            restart_backoff = was.restart_backoff
            datastore = datastore if "datastore" in given else existing.datastore
            etcd_tls = etcd_tls if "etcd_tls" in given else existing.etcd_tls
        try:
            topo = build_topology(
                nodes=nodes,
                azs=azs,
                instance_type=instance_type,
                pod_subnets=pods_per_az,
                ip_family=ip_family,
            )
            instance_limits(instance_type)
        except TopologyError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        except UnknownInstanceType as e:
            typer.echo(f"error: --instance-type {instance_type!r} is not a known EC2 instance type", err=True)
            raise typer.Exit(2) from e
        console = Console(stderr=True)
        start = time.monotonic()
        with console.status(f"lab {layout.prefix}: starting", spinner="dots") as spinner:

            def progress(msg: str) -> None:
                console.print(f"[dim]{time.monotonic() - start:5.2f}s[/dim] {msg}", highlight=False)
                spinner.update(f"lab {layout.prefix}: {msg}")

            try:
                result = up(
                    topo,
                    layout,
                    agents=agents,
                    agent_settings=settings,
                    restart_backoff=restart_backoff,
                    progress=progress,
                    datastore=datastore,
                    image=image,
                    etcd_tls=etcd_tls,
                )
            except LabError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(1) from e
        took = time.monotonic() - start
        info = result.info
        if result.already_up:
            typer.echo(f"lab {layout.prefix} is already up ({len(info.nodes)} nodes); nothing changed")
            return
        if result.changed != ["created"]:
            typer.echo(f"lab {layout.prefix} repaired: {'; '.join(result.changed)} ({took:.2f} s)")
            return
        typer.echo(
            f"lab {layout.prefix} is up in {took:.2f} s: VPC {info.vpc_cidr}, {len(info.nodes)} nodes "
            f"({', '.join(f'{n.name} {n.primary_ip}' for n in info.nodes)}); EC2 endpoint "
            f"{info.endpoints['ec2_host']}; KUBECONFIG={layout.kubeconfig}; see `vpcnet lab status`"
        )

    @lab.command("down")
    def down_command(prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP)) -> None:
        """Remove every namespace, process and file of the lab (also a half-made one)."""
        from vpcnet.lab.labctl import LabError, down

        _need_root()
        layout = _layout(prefix)
        try:
            result = down(layout)
        except LabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if not result.namespaces and not result.processes and not result.run_dir_removed:
            typer.echo(f"lab {layout.prefix} is not up; nothing to remove")
            return
        typer.echo(
            f"lab {layout.prefix} removed: {len(result.namespaces)} namespaces, "
            f"{result.processes} processes, "
            f"{layout.run_dir}"
        )

    @lab.command("upgrade")
    def upgrade_command(
        image: Path = typer.Option(..., "--image", help="the new OCI archive (`make image`)"),  # noqa: B008
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Roll the node agents of a `lab up --image` lab to another image, one node at a time (stop the old
        container, start the new, wait until it is ready); pods keep their addresses and traffic."""
        from vpcnet.lab.labctl import LabError
        from vpcnet.lab.labupgrade import upgrade

        _need_root()
        layout = _layout(prefix)
        try:
            result = upgrade(layout, image, progress=lambda msg: typer.echo(msg, err=True))
        except LabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        each = ", ".join(f"{n} {s:.1f} s" for n, s in result.seconds_per_node.items())
        typer.echo(f"lab {layout.prefix}: agents {result.old_image} -> {result.new_image} ({each})")

    @lab.command("status")
    def status_command(
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
        output: str = typer.Option("table", "--output", "-o", help="table, json, svg or dot (pictures)"),
    ) -> None:
        """The lab's nodes (instance, AZ, subnet, ENIs with addresses and prefixes) and endpoints."""
        from vpcnet.lab.labctl import LabError, status

        if output not in ("table", "json", "svg", "dot"):
            typer.echo(f"error: --output must be table, json, svg or dot, not {output!r}", err=True)
            raise typer.Exit(2)
        layout = _layout(prefix)
        try:
            doc = status(layout)
        except LabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if output == "json":
            typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        elif output in ("svg", "dot") and doc["up"]:
            from vpcnet.cli.topology_picture import draw_lab

            typer.echo(draw_lab(layout, doc, output), nl=False)
        else:
            _print_status(doc)
        if not doc["up"]:
            raise typer.Exit(3)

    @lab.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def exec_command(
        ctx: typer.Context,
        node: str = typer.Argument(..., help="node name (node1, ...), vpc, inet, or a pod as NAMESPACE/NAME"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Run a command in a node's (or pod's) namespace: `vpcnet lab exec node1 -- ip addr`."""
        from vpcnet.lab.labctl import LabError, exec_in_node

        _need_root()
        layout = _layout(prefix)
        try:
            code = exec_in_node(layout, node, list(ctx.args))
        except LabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        raise typer.Exit(code)

    @lab.command("logs")
    def logs_command(
        node: str = typer.Argument(..., help="node name, or `cloud` / `etcd` for the lab's own daemons"),
        follow: bool = typer.Option(False, "--follow", "-f", help="keep printing as the log grows"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Print a node agent's log (or the lab daemon's, or etcd's)."""
        from vpcnet.lab import labetcd
        from vpcnet.lab.labctl import daemon_log, read_info

        layout = _layout(prefix)
        if node == "cloud":
            path = daemon_log(layout)
        elif node == "etcd":
            path = labetcd.log_file(layout)
        else:
            info = read_info(layout)
            if info is None:
                typer.echo(f"error: lab {layout.prefix} is not up", err=True)
                raise typer.Exit(2)
            if node not in {n.name for n in info.nodes}:
                known = ", ".join(n.name for n in info.nodes)
                typer.echo(f"error: no node {node!r} in lab {layout.prefix} (nodes: {known})", err=True)
                raise typer.Exit(2)
            path = layout.agent_log(node)
        if not path.exists():
            typer.echo(f"error: no log yet at {path}", err=True)
            raise typer.Exit(1)
        _cat(path, follow)

    @lab.command("serve-cloud", hidden=True)
    def serve_cloud_command(
        prefix: str = typer.Option(..., "--prefix"), etcd: str = typer.Option(..., "--etcd")
    ) -> None:
        """Run the lab daemon in the foreground (`lab up` starts it in the background)."""
        from vpcnet.lab.cloudd import main

        raise typer.Exit(main(["--prefix", prefix, "--etcd", etcd]))


def _given(ctx: typer.Context) -> set[str]:
    """The options given on the command line (or by environment), not left at their defaults."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)  # click's ParameterSource (typer vendors click: by name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.add(name)
    return given


def family_settings(ip_family: str, settings: dict[str, str]) -> dict[str, str]:
    """The agents' family settings for --ip-family (what --agent-env gives wins). VPC mode: ipv6 is the
    VPC CNI's IPv6 mode (IPv6 pods from a /80, prefix delegation on); dual gives the nodes both families
    and the pods IPv4. Calico mode: ipv6 gives the pods IPv6 only, dual one address of each family."""
    if settings.get("VPCNET_MODE") == "calico":
        if ip_family == "ipv6":
            return {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false"}
        if ip_family == "dual":
            return {"ENABLE_IPv6": "true", "ENABLE_IPv4": "true"}
        return {}
    if ip_family == "ipv6":
        return {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}
    return {}


def _agent_settings(mode: str | None, pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    if mode is not None:
        if mode not in ("vpc", "calico"):
            typer.echo(f"error: --mode must be vpc or calico, not {mode!r}", err=True)
            raise typer.Exit(2)
        settings["VPCNET_MODE"] = mode
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            typer.echo(f"error: --agent-env {pair!r} must be KEY=VALUE", err=True)
            raise typer.Exit(2)
        settings[key] = value
    return settings


def _cat(path: Any, follow: bool) -> None:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow:
                return
            try:
                time.sleep(0.25)
            except KeyboardInterrupt:
                return


def _print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    if not doc["up"]:
        left = doc.get("leftover_namespaces") or []
        console.print(
            f"lab {doc['prefix']} is not up" + (f" (leftover namespaces: {', '.join(left)})" if left else "")
        )
        return
    vpc = doc["vpc"]
    console.print(f"lab [bold]{doc['prefix']}[/bold]: VPC {vpc['id']} {vpc['cidr']} ({vpc['region']})")
    table = Table("node", "namespace", "instance", "type", "AZ", "subnet", "primary IP", "ENIs", "agent")
    for n in doc["nodes"]:
        enis = []
        for e in n["enis"]:
            extra = e["secondary_ips"] + e["prefixes"]
            sdc = "" if e["source_dest_check"] else " (no src/dst check)"
            enis.append(
                f"eth{e['device_index']} {e['id']} {e['primary_ip']}"
                + (f" +{', '.join(extra)}" if extra else "")
                + sdc
            )
        table.add_row(
            n["name"], n["netns"], n["instance_id"], n["instance_type"], n["az"],
            f"{n['subnet_id']} {n['subnet_cidr']}", n["primary_ip"], "\n".join(enis), n["agent"],
        )  # fmt: skip
    console.print(table)
    ep = doc["endpoints"]
    if "kubeapi" in ep:
        console.print(
            f"Kubernetes API {ep['kubeapi']} (host: {ep['kubeapi_host']})   "
            f"KUBECONFIG={doc['kubeconfig']}   (kubectl --kubeconfig {doc['kubeconfig']} get nodes -o wide)",
            soft_wrap=True,
        )
    console.print(
        f"EC2 {ep['ec2']} (host: {ep['ec2_host']})   IMDS {ep['imds']}   "
        f"etcd {ep['etcd']} (host: {ep['etcd_host']})   internet host {doc['internet_host']}"
    )
    if doc.get("agent_settings"):
        console.print(
            "agent settings: " + " ".join(f"{k}={v}" for k, v in sorted(doc["agent_settings"].items()))
        )
    procs = doc["processes"]
    console.print("processes: " + ", ".join(f"{k} {'running' if v else 'STOPPED'}" for k, v in procs.items()))
    # What a person needs to run the plugin by hand exactly as the lab kubelet does (portmap is a system one).
    from vpcnet.lab.cniexec import SYSTEM_CNI_PATHS

    console.print("CNI, as the lab kubelet runs it (in the node's namespace, `vpcnet lab exec NODE -- ...`):")
    for n in doc["nodes"]:
        cni_path = ":".join([n["cni_bin_dir"], *SYSTEM_CNI_PATHS])
        console.print(f"  {n['name']}: config {n['cni_conf_dir']}  CNI_PATH={cni_path}", soft_wrap=True)
