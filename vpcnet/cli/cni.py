"""`vpcnet install-cni`: the shim into the CNI bin dir, then (once the agent is ready) the conflist."""

from __future__ import annotations

from pathlib import Path

import typer

from vpcnet.cli.groups import Groups

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("install-cni")
    def install_cni(
        bin_dir: str = typer.Option(DEFAULT_BIN_DIR, "--bin-dir", help="where runtimes find plugins"),
        conf_dir: str = typer.Option(DEFAULT_CONF_DIR, "--conf-dir", help="where runtimes read configs"),
        # Defaults from the agent's environment variables, read when the command runs (a bad value is then
        # an error of this command naming the variable, not a crash of every vpcnet command at start-up).
        socket: str = typer.Option(
            "/var/run/vpcnet/agent.sock",
            "--socket",
            envvar="VPCNET_AGENT_SOCKET",
            help="the agent's unix socket (VPCNET_AGENT_SOCKET)",
        ),
        timeout: float = typer.Option(300.0, "--timeout", min=0, help="seconds to wait for the agent"),
        mtu: int = typer.Option(
            9001, "--mtu", envvar="AWS_VPC_ENI_MTU", min=576, max=9001, help="pod MTU (AWS_VPC_ENI_MTU)"
        ),
        veth_prefix: str = typer.Option(
            "eni",
            "--veth-prefix",
            envvar="AWS_VPC_K8S_CNI_VETHPREFIX",
            help="host veth prefix (AWS_VPC_K8S_CNI_VETHPREFIX)",
        ),
        no_portmap: bool = typer.Option(False, "--no-portmap", help="do not chain portmap (hostPort)"),
        native: bool = typer.Option(
            False, "--native", help="the native client or fail (default: native if possible, else Python)"
        ),
        python: bool = typer.Option(False, "--python", help="the Python shim, not the native client"),
        native_binary: str = typer.Option(
            "",
            "--native-binary",
            help="a prebuilt vpcnet-cni-native to install (default: VPCNET_CNI_NATIVE_BINARY, "
            "vpcnet/cni/native/vpcnet-cni-native, /usr/lib/vpcnet/vpcnet-cni-native, else compiled with cc)",
        ),
        conf_only: bool = typer.Option(
            False,
            "--conf-only",
            help="only the network config: the plugin is in place (the image's init step)",
        ),
    ) -> None:
        """Install vpcnet-cni and, once the agent answers STATUS ready, its network config (last).

        The plugin is the native client by default; where none can be found or compiled, the Python shim
        (a log line says why)."""
        import logging

        from vpcnet.cni.install import AgentNotReady, InstallError, install
        from vpcnet.cni.nativeclient import NativeBuildError

        if native and python:
            typer.echo("error: --native and --python exclude each other; nothing was written", err=True)
            raise typer.Exit(2)
        if python and native_binary:
            typer.echo("error: --native-binary and --python exclude each other; nothing written", err=True)
            raise typer.Exit(2)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        try:
            target = install(
                Path(bin_dir),
                Path(conf_dir),
                socket,
                timeout=timeout,
                mtu=mtu,
                veth_prefix=veth_prefix,
                portmap=not no_portmap,
                native=True if native else False if python else None,
                native_binary=Path(native_binary) if native_binary else None,
                binary=not conf_only,
            )
        except InstallError as exc:
            typer.echo(f"error: {exc}; nothing was written", err=True)
            raise typer.Exit(2) from exc
        except AgentNotReady as exc:
            done = "" if conf_only else f"the plugin is in {bin_dir}, "
            typer.echo(f"error: {exc}; {done}the config was not written", err=True)
            raise typer.Exit(1) from exc
        except (OSError, NativeBuildError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(
            f"installed {target}" if conf_only else f"installed {Path(bin_dir) / 'vpcnet-cni'} and {target}"
        )
