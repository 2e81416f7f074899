"""How `vpcnet lab wait` knows that the node agents have caught up with the datastore.

Contract with the policy agent: after each apply to the kernel, the agent of node N writes
`layout.node_dir(N)/policy-status.json` (atomically: write a temporary file, then rename) holding
{"revision": R, "pid": P, "pid_start": T, ...}, meaning "every datastore change up to revision R is enforced
in this node's kernel". The file outlives its writer, so it is believed only while the process that wrote it
(pid P, started at T) is alive (vpcnet.agent.liveness): a dead agent's last word is no report.
(The agent learns R from its watch: the revision of the last event it applied, or, once its queue is
empty, the store revision its watch stream reports — etcd's progress notifications move it forward even
when nothing under the agent's prefix changed.)

In kubernetes mode (`lab up --datastore kubernetes`) the agents watch the lab's API, whose resourceVersions
are etcd revisions and whose bookmarks (every 0.2 s) move quiet kinds on: `wait` compares the agents'
revisions with etcd's directly. In etcd mode `wait` has two steps: first kube-controllers must report (in
`run_dir/kube-controllers-progress.json`, same form) that it has mirrored every API change up to the store
revision read when `wait` starts; then `wait` reads the store revision again (now past the mirrored writes)
and returns when every node's agent has reported a revision at least that high.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpcnet.agent.liveness import own_stamp, stamp_alive
from vpcnet.lab.layout import LabLayout

STATUS_FILE = "policy-status.json"


def status_path(layout: LabLayout, node: str) -> Path:
    return layout.node_dir(node) / STATUS_FILE


def applied_revision(layout: LabLayout, node: str) -> int | None:
    """The revision node's live agent reported, or None when it has reported nothing (readable) yet, or the
    agent that wrote it is gone."""
    try:
        data = json.loads(status_path(layout, node).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not stamp_alive(data):
        return None
    revision = data.get("revision")
    return revision if isinstance(revision, int) and not isinstance(revision, bool) else None


def write_status(layout: LabLayout, node: str, revision: int, **extra: object) -> None:
    """The writer's side of the contract, stamped with the calling process (what an agent writes)."""
    path = status_path(layout, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"revision": revision, **own_stamp(), **extra}))
    tmp.replace(path)


def mirror_progress_path(layout: LabLayout) -> Path:
    return layout.run_dir / "kube-controllers-progress.json"


def wait_for_mirror(layout: LabLayout, target: int, timeout: float, interval: float = 0.02) -> int | None:
    """The revision kube-controllers reports once it is >= target (or what it reports at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = json.loads(mirror_progress_path(layout).read_text())
            seen = data.get("revision") if isinstance(data, dict) else None
        except (OSError, ValueError):
            seen = None
        if isinstance(seen, int) and seen >= target:
            return seen
        if time.monotonic() >= deadline:
            return seen if isinstance(seen, int) else None
        time.sleep(interval)


@dataclass(frozen=True)
class WaitResult:
    target: int
    converged: bool
    revisions: dict[str, int | None]
    seconds: float

    def lagging(self) -> dict[str, int | None]:
        return {n: r for n, r in self.revisions.items() if r is None or r < self.target}


def wait_for_revision(
    layout: LabLayout, nodes: Sequence[str], target: int, timeout: float, interval: float = 0.05
) -> WaitResult:
    start = time.monotonic()
    while True:
        revisions = {node: applied_revision(layout, node) for node in nodes}
        done = all(r is not None and r >= target for r in revisions.values())
        elapsed = time.monotonic() - start
        if done or elapsed >= timeout:
            return WaitResult(target, done, revisions, elapsed)
        time.sleep(interval)
