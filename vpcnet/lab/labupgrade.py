"""`vpcnet lab upgrade --image FILE`: a rolling update of the node agents to another image, as the DaemonSet's
RollingUpdate does it with one node unavailable at a time: on each node in turn the old agent container is
stopped (SIGTERM, its grace period) and the new one started; the next node waits until this one answers
STATUS ready. The new agent adopts what the old one left (the checkpoint under the node's /var/run/vpcnet,
the kernel's routes, rules and chains): the pods keep their addresses and their traffic, which never depended
on the agent process.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from vpcnet.lab import procs
from vpcnet.lab.labctl import (
    AGENT_READY_TIMEOUT,
    LabError,
    Progress,
    _locked,
    _write_json,
    agent_marker,
    agent_pid_file,
    import_agent_image,
    read_info,
    start_agent,
)
from vpcnet.lab.layout import LabLayout

GRACE_PERIOD = 30.0  # the DaemonSet's terminationGracePeriodSeconds


@dataclass(frozen=True)
class UpgradeResult:
    old_image: str
    new_image: str
    nodes: list[str]
    seconds_per_node: dict[str, float]  # from stopping the old agent to the new one answering ready


def upgrade(layout: LabLayout, archive: Path, progress: Progress = lambda _msg: None) -> UpgradeResult:
    with _locked():
        info = read_info(layout)
        if info is None:
            raise LabError(f"lab {layout.prefix} is not up (`vpcnet lab up --image FILE`)")
        if not info.agents or not info.agent_image:
            raise LabError(
                f"lab {layout.prefix}'s agents do not run from an image; "
                "bring it up with `lab up --image FILE`"
            )
        progress(f"importing {archive} into the lab's containerd")
        image = import_agent_image(layout, archive)
        old = info.agent_image
        info = dataclasses.replace(info, agent_image=image)
        _write_json(layout.state_file, info.to_json())  # a repair from now on starts the new image
        took: dict[str, float] = {}
        for node in info.nodes:
            progress(f"{node.name}: replacing the agent ({old} -> {image})")
            start = time.monotonic()
            procs.stop(agent_pid_file(layout, node.name), agent_marker(layout, node.name), GRACE_PERIOD)
            start_agent(layout, node.name, info)
            wait_ready(layout, node.name)
            took[node.name] = round(time.monotonic() - start, 2)
        return UpgradeResult(old, image, [n.name for n in info.nodes], took)


def wait_ready(layout: LabLayout, node: str, timeout: float = AGENT_READY_TIMEOUT) -> None:
    """Until node's agent answers the CNI STATUS command ready (what the DaemonSet's readiness waits for)."""
    from vpcnet.cni.install import agent_status

    deadline = time.monotonic() + timeout
    while True:
        ready, why = agent_status(str(layout.agent_socket(node)))
        if ready:
            return
        if not procs.alive(agent_pid_file(layout, node), agent_marker(layout, node)):
            tail = layout.agent_log(node).read_text(errors="replace")[-2000:]
            raise LabError(f"the new agent on {node} exited; {layout.agent_log(node)} ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise LabError(f"the new agent on {node} is not ready after {timeout:.0f} s: {why}")
        time.sleep(0.1)
