"""`vpcnet agent`: run the node agent (ipamd, CNI server, policy) in the foreground."""

from __future__ import annotations

import typer

from vpcnet.cli.agent_run import run_agent_with
from vpcnet.cli.groups import Groups


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
        status = run_agent_with(
            {
                "ec2_endpoint": ec2_endpoint,
                "imds_endpoint": imds_endpoint,
                "socket": socket,
                "checkpoint": checkpoint,
                "log_file": log_file,
                "node_name": node_name,
                "mode": mode,
            }
        )
        if status:
            raise typer.Exit(status)
