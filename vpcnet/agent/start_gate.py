"""A start gate: the agent loads its code, then waits for a file before it starts its components.

A node's agent spends most of its start-up importing (Python and its libraries, 1-2 s on a loaded node), and
none of that needs the EC2 endpoint, the datastore or the API. The lab starts its agents as soon as the node
namespaces exist, with VPCNET_AGENT_START_GATE naming a file it writes once EC2, etcd and the Kubernetes API
answer and the CRDs and Nodes are in: the imports overlap the lab's own start-up. Unset (a real node): none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

START_GATE_ENV = "VPCNET_AGENT_START_GATE"
POLL_S = 0.02

log = logging.getLogger("vpcnet.agent")


class GateTimeout(RuntimeError):
    """The gate did not open in time (the agent exits; its supervisor starts it again)."""


async def wait_for_gate(path: Path, timeout: float = 600.0) -> None:
    if path.exists():
        return
    log.info("waiting for the start gate", extra={"gate": str(path)})
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise GateTimeout(f"{START_GATE_ENV}={path}: the file did not appear in {timeout:.0f} s")
        await asyncio.sleep(POLL_S)
