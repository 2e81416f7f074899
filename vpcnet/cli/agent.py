"""`vpcnet agent`: run the node agent (ipamd, CNI server, policy) in the foreground."""

from __future__ import annotations

import os

import typer

from vpcnet.cli.groups import Groups

# option -> environment variable it sets (the environment is the agent's one source of configuration)
_OPTION_ENV = {
    "ec2_endpoint": "AWS_EC2_ENDPOINT",
    "imds_endpoint": "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "socket": "VPCNET_AGENT_SOCKET",
    "checkpoint": "AWS_VPC_K8S_CNI_BACKING_STORE",
    "log_file": "AWS_VPC_K8S_CNI_LOG_FILE",
    "node_name": "VPCNET_NODE_NAME",
    "mode": "VPCNET_MODE",
}


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("agent")
    def agent_command(
        ec2_endpoint: str | None = typer.Option(None, help="EC2 endpoint URL (env AWS_EC2_ENDPOINT)"),
        imds_endpoint: str | None = typer.Option(
            None, help="instance metadata URL (env AWS_EC2_METADATA_SERVICE_ENDPOINT)"
        ),
        socket: str | None = typer.Option(None, help="the agent's unix socket (env VPCNET_AGENT_SOCKET)"),
        checkpoint: str | None = typer.Option(
            None, help="assignment checkpoint file (env AWS_VPC_K8S_CNI_BACKING_STORE)"
        ),
        log_file: str | None = typer.Option(
            None, help="log file, besides stderr (env AWS_VPC_K8S_CNI_LOG_FILE)"
        ),
        node_name: str | None = typer.Option(None, help="this node's name (env VPCNET_NODE_NAME)"),
        mode: str | None = typer.Option(None, help="vpc or calico (env VPCNET_MODE)"),
    ) -> None:
        """Run the node agent in the foreground until SIGTERM. Settings come from the environment, with the
        VPC CNI's variable names (WARM_ENI_TARGET, WARM_IP_TARGET, ...); an option overrides its variable."""
        from vpcnet.agent.config import ConfigError, load_config
        from vpcnet.agent.daemon import run_agent
        from vpcnet.agent.logs import setup_logging

        given = {
            "ec2_endpoint": ec2_endpoint,
            "imds_endpoint": imds_endpoint,
            "socket": socket,
            "checkpoint": checkpoint,
            "log_file": log_file,
            "node_name": node_name,
            "mode": mode,
        }
        env = dict(os.environ)
        for option, value in given.items():
            if value is not None:
                env[_OPTION_ENV[option]] = value
        try:
            config = load_config(env)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        setup_logging(config.log_level, config.log_file)
        try:
            run_agent(config)
        except Exception as exc:
            import logging

            logging.getLogger("vpcnet.agent").exception("agent failed")
            typer.echo(f"error: agent failed: {exc}", err=True)
            raise typer.Exit(1) from exc
