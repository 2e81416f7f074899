"""Running the node agent from its options, without typer: shared by `vpcnet agent` (the full CLI) and the
light entry point (vpcnet.cli.entry), which starts the agent without importing the CLI framework."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# option -> environment variable it sets (the environment is the agent's one source of configuration)
OPTION_ENV = {
    "ec2_endpoint": "AWS_EC2_ENDPOINT",
    "imds_endpoint": "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "socket": "VPCNET_AGENT_SOCKET",
    "checkpoint": "AWS_VPC_K8S_CNI_BACKING_STORE",
    "log_file": "AWS_VPC_K8S_CNI_LOG_FILE",
    "node_name": "VPCNET_NODE_NAME",
    "mode": "VPCNET_MODE",
}


def run_agent_with(given: Mapping[str, str | None]) -> int:
    """Run the agent until SIGTERM with these option values (None: not given); the exit status."""
    from vpcnet.agent.config import ConfigError, load_config
    from vpcnet.agent.daemon import run_agent
    from vpcnet.agent.logs import setup_logging
    from vpcnet.agent.start_gate import START_GATE_ENV

    env = dict(os.environ)
    for option, value in given.items():
        if value is not None:
            env[OPTION_ENV[option]] = value
    try:
        config = load_config(env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_file)
    gate = env.get(START_GATE_ENV, "").strip()
    try:
        run_agent(config, start_gate=Path(gate) if gate else None)
    except Exception as exc:
        import logging

        logging.getLogger("vpcnet.agent").exception("agent failed")
        print(f"error: agent failed: {exc}", file=sys.stderr)
        return 1
    return 0
