"""Bringing a lab up and down, and describing it: the steps behind `vpcnet lab up/down/status/exec/logs`.

`up` is idempotent: with the lab up and healthy it changes nothing and says so; with pieces missing (a
process died) it restarts just those. `down` works from names alone (the prefix), so it also removes a
half-made lab: processes of its pid files and any process living in its namespaces, every namespace named
`{prefix}-*` (nodes, VPC, internet, pods), then its run dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vpcnet.agent.start_gate import START_GATE_ENV
from vpcnet.cni.install import CONFLIST_NAME
from vpcnet.datastore.open import preload
from vpcnet.datastore.settings import DatastoreType
from vpcnet.lab import labetcd, netns, procs
from vpcnet.lab.cloudd import go_file
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.identity import LAB_CREDENTIALS as LAB_CREDENTIALS  # its home; agents sign with it
from vpcnet.lab.fabric import INTERNET_HOST_ADDRESS, NODE_TAG, Fabric, FabricError
from vpcnet.lab.layout import (
    EC2_ENDPOINT_ADDRESS,
    ETCD_ENDPOINT_ADDRESS,
    IMDS_ADDRESS,
    INTERNET_CIDR,
    KUBEAPI_ADDRESS,
    KUBEAPI_PORT,
    RUN_ROOT,
    LabLayout,
)
from vpcnet.lab.layout import layout_for as layout_for  # its home is layout.py; callers import it here too
from vpcnet.lab.topology import LabTopology, NodeSpec, SubnetSpec

STATE_VERSION = 1
ETCD_VPC_PORT = 2379
READY_TIMEOUT = 30.0
AGENT_READY_TIMEOUT = 60.0  # a node agent must answer STATUS ready this soon after it starts
# Node agents are restarted after 0.5 s, doubling to 30 s while they fail (the kubelet: 10 s up to 5 min).
DEFAULT_RESTART_BACKOFF = "0.5:30"
AGENT_STOP_TIMEOUT = 5.0  # an agent gets this long to shut down cleanly after SIGTERM, then SIGKILL

Progress = Callable[[str], None]


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says why and what to do."""


# ------------------------------------------------------------------ the lab's description (lab.json)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    netns: str
    instance_id: str
    instance_type: str
    az: str
    subnet: str
    subnet_id: str
    subnet_cidr: str
    primary_ip: str
    cni_conf_dir: str
    cni_bin_dir: str
    agent_socket: str
    agent_log: str


@dataclass(frozen=True)
class LabInfo:
    prefix: str
    vpc_id: str
    vpc_cidr: str
    region: str
    subnets: dict[str, dict[str, str]]  # name -> {id, cidr, az, role}
    nodes: list[NodeInfo]
    endpoints: dict[str, str]
    internet_host: str
    agents: bool
    # Environment the lab gives every node agent on top of its own (VPCNET_MODE=calico, WARM_IP_TARGET=...).
    agent_settings: dict[str, str] = dataclasses.field(default_factory=dict)
    # What the node agents read: "kubernetes" (the lab's API) or "etcd" (kube-controllers' mirror of it).
    datastore: str = "etcd"
    # How a node's supervisor restarts its agent: INITIAL:MAX seconds (vpcnet.lab.supervise).
    restart_backoff: str = DEFAULT_RESTART_BACKOFF
    # The image the node agents run from (`lab up --image`), in the lab's containerd; "" for processes.
    agent_image: str = ""
    # etcd serves TLS and asks clients for certificates (`lab up --etcd-tls`; vpcnet.lab.labetcd)
    etcd_tls: bool = False

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise LabError(f"lab {self.prefix} has no node {name!r} (nodes: {known})")

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **asdict(self)}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> LabInfo:
        data = {k: v for k, v in raw.items() if k != "version"}
        data["nodes"] = [NodeInfo(**n) for n in data["nodes"]]
        return LabInfo(**data)


def read_info(layout: LabLayout) -> LabInfo | None:
    try:
        raw = json.loads(layout.state_file.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise LabError(f"{layout.state_file} is not valid JSON ({e}); `vpcnet lab down` removes it") from e
    if raw.get("version") != STATE_VERSION:
        raise LabError(f"{layout.state_file}: version {raw.get('version')!r}, expected {STATE_VERSION}")
    return LabInfo.from_json(raw)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------ processes


def daemon_pid_file(layout: LabLayout) -> Path:
    return layout.run_dir / "cloudd.pid"


def daemon_log(layout: LabLayout) -> Path:
    return layout.run_dir / "cloudd.log"


def daemon_ready_file(layout: LabLayout) -> Path:
    return layout.run_dir / "cloudd.json"


def daemon_marker(layout: LabLayout) -> str:
    return f"vpcnet.lab.cloudd --prefix {layout.prefix} "


# The lab's control-plane processes beside the daemon: kube-controllers (the API mirrored into etcd, which
# the agents read in etcd mode), the branch controller (security groups for pods: trunk and branch ENIs,
# the VPC resource controller's job) and the lab kubelet (pods of the API run on the nodes).
CONTROL_PROCESSES = ("kube-controllers", "branch-controller", "kubelet")
DATASTORES = ("kubernetes", "etcd")


def lab_datastore(datastore: str | None, agent_settings: Mapping[str, str]) -> str:
    """What the lab's agents read: as asked, else the lab's Kubernetes API (as on a cluster)."""
    if datastore is None:
        return "kubernetes"
    if datastore not in DATASTORES:
        raise LabError(f"--datastore {datastore!r}: expected one of {', '.join(DATASTORES)}")
    return datastore


def control_processes(info: LabInfo) -> tuple[str, ...]:
    """kube-controllers only in etcd mode: over the Kubernetes datastore the agents watch the API."""
    return CONTROL_PROCESSES if info.datastore == "etcd" else ("branch-controller", "kubelet")


def control_pid_file(layout: LabLayout, name: str) -> Path:
    return layout.run_dir / f"{name}.pid"


def control_log(layout: LabLayout, name: str) -> Path:
    return layout.run_dir / f"{name}.log"


def control_marker(layout: LabLayout, name: str) -> str:
    return f"{layout.run_dir}/{name}"


def mirror_progress_file(layout: LabLayout) -> Path:
    """kube-controllers' {"revision": R}: every API change up to R is in etcd (read by `lab wait`)."""
    from vpcnet.lab.converge import mirror_progress_path

    return mirror_progress_path(layout)


def start_control(layout: LabLayout, name: str, info: LabInfo) -> None:
    if name == "kube-controllers" and info.agent_image:
        start_controllers_container(layout, info)
        return
    # The marker (a path under the run dir) rides on the command line so that `down` can check the pid.
    if name == "kube-controllers":
        argv = [
            sys.executable, "-c", "from vpcnet.cli.main import main; main()", "kube-controllers",
            "--kubeconfig", str(layout.kubeconfig),
            "--progress-file", str(mirror_progress_file(layout)),
            "--marker", control_marker(layout, name),
        ]  # fmt: skip
        env = {
            **os.environ,
            "VPCNET_DATASTORE_ENDPOINTS": info.endpoints["etcd_host"],
            **labetcd.client_tls_env(layout),
        }
        env.pop("VPCNET_ETCD_ENDPOINTS", None)
    elif name == "branch-controller":
        argv = [
            sys.executable, "-c", "from vpcnet.cli.main import main; main()", "branch-controller",
            "--kubeconfig", str(layout.kubeconfig),
            "--region", info.region,
            "--ec2-endpoint", info.endpoints["ec2_host"],
            "--cluster-name", layout.prefix,
            "--branch-eni-cooldown", "30",  # EKS's floor: the lab's tests wait it out
            "--branch-reuse-window", "30",
            "--marker", control_marker(layout, name),
        ]  # fmt: skip
        env = {**os.environ, **LAB_CREDENTIALS}
    else:
        argv = [
            sys.executable, "-m", "vpcnet.lab.kubeletd", "--prefix", layout.prefix,
            "--marker", control_marker(layout, name),
        ]  # fmt: skip
        env = dict(os.environ)
    procs.spawn(argv, log_file=control_log(layout, name), pid_file=control_pid_file(layout, name), env=env)


def start_controllers_container(layout: LabLayout, info: LabInfo) -> None:
    """kube-controllers from the lab's image, as deploy/'s Deployment runs it (vpcnet/lab/imageagents.py)."""
    from vpcnet.lab import containerd, imageagents

    try:
        containerd.start(layout)
        imageagents.start_controllers(
            layout,
            info.agent_image,
            kubeconfig=layout.kubeconfig,
            etcd_endpoints=info.endpoints["etcd_host"],
            tls_env=labetcd.client_tls_env(layout),
            progress_file=mirror_progress_file(layout),
            pid_file=control_pid_file(layout, "kube-controllers"),
            log_file=control_log(layout, "kube-controllers"),
            marker=control_marker(layout, "kube-controllers"),
        )
    except (containerd.ContainerdError, imageagents.ManifestError) as exc:
        raise LabError(f"cannot start kube-controllers from image {info.agent_image}: {exc}") from exc


def control_alive(layout: LabLayout, name: str) -> bool:
    return procs.alive(control_pid_file(layout, name), control_marker(layout, name))


def bootstrap_api(layout: LabLayout, info: LabInfo) -> None:
    """kubeconfigs, CRDs and Nodes in the lab's API."""
    import asyncio

    from vpcnet.datastore.types import DatastoreError
    from vpcnet.lab.labapi import bootstrap, write_kubeconfigs

    write_kubeconfigs(layout, info.endpoints["kubeapi_host"], info.endpoints["kubeapi"])
    try:
        asyncio.run(bootstrap(layout.kubeconfig, info.nodes, info.region))
    except DatastoreError as exc:
        raise LabError(f"the lab's Kubernetes API refused its CRDs or Nodes: {exc}") from exc


def wait_mirror(layout: LabLayout, timeout: float = READY_TIMEOUT) -> None:
    """Until kube-controllers has mirrored the API once (its first progress report)."""
    from vpcnet.controllers.kubecontrollers import read_progress

    deadline = time.monotonic() + timeout
    while read_progress(mirror_progress_file(layout)) is None:
        if not control_alive(layout, "kube-controllers"):
            raise LabError(
                "kube-controllers exited during start-up; "
                f"{control_log(layout, 'kube-controllers')} ends with:\n"
                + _tail(control_log(layout, "kube-controllers"), 20)
            )
        if time.monotonic() > deadline:
            raise LabError(f"kube-controllers did not mirror the API in {timeout:.0f} s")
        time.sleep(0.02)


def agent_pid_file(layout: LabLayout, node: str) -> Path:
    return layout.node_dir(node) / "agent.pid"


def agent_marker(layout: LabLayout, node: str) -> str:
    return str(layout.agent_socket(node))


def supervisor_pid_file(layout: LabLayout, node: str) -> Path:
    """The node's agent supervisor (its command line carries the agent's, so agent_marker checks it too)."""
    return layout.node_dir(node) / "agent-supervisor.pid"


def agent_supervised(layout: LabLayout, node: str) -> bool:
    return procs.alive(supervisor_pid_file(layout, node), agent_marker(layout, node))


def start_daemon(
    layout: LabLayout,
    etcd_url: str,
    ec2_host_port: int = 0,
    wait_for_go: bool = False,
    kube_host_port: int = 0,
) -> None:
    daemon_ready_file(layout).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "vpcnet.lab.cloudd", "--prefix", layout.prefix, "--etcd", etcd_url]
    if ec2_host_port:
        argv += ["--ec2-host-port", str(ec2_host_port)]
    if kube_host_port:
        argv += ["--kube-host-port", str(kube_host_port)]
    if wait_for_go:
        argv.append("--wait-for-go")
    env = {**os.environ, **labetcd.client_tls_env(layout)}  # the Kubernetes API is an etcd client
    procs.spawn(argv, log_file=daemon_log(layout), pid_file=daemon_pid_file(layout), env=env)


def wait_daemon(layout: LabLayout, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Wait for the daemon's ready file (written once every socket is bound)."""
    deadline = time.monotonic() + timeout
    ready = daemon_ready_file(layout)
    while time.monotonic() < deadline:
        if ready.exists():
            data: dict[str, Any] = json.loads(ready.read_text())
            return data
        if not procs.alive(daemon_pid_file(layout), daemon_marker(layout)):
            log = daemon_log(layout)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise LabError(f"the lab daemon exited during start-up; {log} ends with:\n{tail}")
        time.sleep(0.02)
    raise LabError(f"the lab daemon did not get ready in {timeout:.0f} s (log: {daemon_log(layout)})")


# The caller's AWS identity and config must not reach the agents (they would sign for, or read config of,
# a real account); every other variable, VPC CNI knobs included, passes through.
_CALLER_ONLY = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_EC2_METADATA_DISABLED",
    "VPCNET_LAB",
)


def agent_env(layout: LabLayout, node: str, info: LabInfo) -> dict[str, str]:
    """The node agent's environment: the caller's (minus its AWS identity), the lab's endpoints and paths,
    then the lab's agent settings (`lab up --mode/--agent-env`), which win."""
    return _agent_env(
        layout, node, info.endpoints, info.agent_settings, info.datastore, layout.node_kubeconfig
    )


def _agent_env(
    layout: LabLayout,
    node: str,
    endpoints: Mapping[str, str],
    settings: Mapping[str, str],
    datastore: str,
    kubeconfig: Path,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CALLER_ONLY}
    env.update(LAB_CREDENTIALS)
    env.update(
        {
            "AWS_EC2_ENDPOINT": endpoints["ec2"],
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoints["imds"],
            "VPCNET_AGENT_SOCKET": str(layout.agent_socket(node)),
            "AWS_VPC_K8S_CNI_BACKING_STORE": str(layout.checkpoint_file(node)),
            "VPCNET_NODE_NAME": node,
            "VPCNET_DATASTORE_ENDPOINTS": endpoints["etcd"],
            "VPCNET_DATASTORE_TYPE": datastore,
            **labetcd.client_tls_env(layout),
        }
    )
    if datastore == "kubernetes":  # the node-side kubeconfig: the API at its VPC address
        env["KUBECONFIG"] = str(kubeconfig)
    else:
        env.pop("KUBECONFIG", None)
    env.update(settings)
    return env


def check_agent_settings(layout: LabLayout, settings: Mapping[str, str], datastore: str) -> None:
    """The agents' configuration (caller's environment and settings) through the agent's own parser, before
    anything is made: a bad knob is a LabError naming it, not agents that never turn Ready."""
    import tempfile

    from vpcnet.agent.config import ConfigError, load_config

    endpoints = {"ec2": "http://ec2.lab", "imds": "http://169.254.169.254", "etcd": "http://etcd.lab:2379"}
    try:
        with tempfile.NamedTemporaryFile() as kubeconfig:  # the lab writes the real one later
            load_config(_agent_env(layout, "node1", endpoints, settings, datastore, Path(kubeconfig.name)))
    except ConfigError as exc:
        raise LabError(f"node agent setting {exc} (from --agent-env/--mode or the environment)") from None


def start_agent(layout: LabLayout, node: str, info: LabInfo) -> None:
    """The node's agent under its supervisor, which restarts it with back-off whenever it exits (a node
    behaves as under a DaemonSet); the agent's own pid file names the agent, the supervisor's its own. With
    `lab up --image`, the agent is a container of the lab's containerd instead."""
    if info.agent_image:
        start_agent_container(layout, node, info)
        return
    spawn_agent(layout, node, agent_env(layout, node, info), info.restart_backoff)


def agents_gate(layout: LabLayout) -> Path:
    """The file `lab up` writes when the agents it started early may start their components."""
    return layout.run_dir / "agents.go"


def spawn_agent(layout: LabLayout, node: str, env: Mapping[str, str], restart_backoff: str) -> None:
    """The agent and its supervisor, in the node's namespace with env (every agent start comes here)."""
    argv = [
        sys.executable,
        "-m",
        "vpcnet.lab.supervise",
        "--pid-file",
        str(agent_pid_file(layout, node)),
        "--backoff",
        restart_backoff,
        "--",
        sys.executable,
        "-m",
        "vpcnet.cli.entry",
        "agent",
        "--socket",
        str(layout.agent_socket(node)),
    ]
    procs.spawn(
        argv,
        log_file=layout.agent_log(node),
        pid_file=supervisor_pid_file(layout, node),
        in_netns=layout.node_netns(node),
        env=env,
    )


def start_agent_container(layout: LabLayout, node: str, info: LabInfo) -> None:
    """The node's agent from the lab's image, as the DaemonSet runs it (vpcnet/lab/imageagents.py)."""
    from vpcnet.lab import containerd, imageagents

    try:
        containerd.start(layout)  # a no-op while it runs; `lab up` restarts a dead one here
        imageagents.start(
            layout,
            node,
            info.agent_image,
            agent_env(layout, node, info),
            info.agent_settings,
            pid_file=agent_pid_file(layout, node),
            marker=agent_marker(layout, node),
        )
    except (containerd.ContainerdError, imageagents.ManifestError) as exc:
        raise LabError(f"cannot start the agent of {node} from image {info.agent_image}: {exc}") from exc


def check_image(archive: Path, agents: bool) -> None:
    """--image before anything is made: a readable, named OCI archive, for a lab with agents."""
    from vpcnet.lab import containerd

    if not agents:
        raise LabError("--image runs the node agents from the image: it cannot go with --no-agents")
    if not archive.is_file():
        raise LabError(f"--image {archive}: no such file (`make image` builds vpcnet.oci.tar)")
    try:
        containerd.image_name(archive)
    except containerd.ContainerdError as exc:
        raise LabError(f"--image {exc}") from exc


def import_agent_image(layout: LabLayout, archive: Path) -> str:
    """Start the lab's containerd and import archive into it; returns the image's name."""
    from vpcnet.lab import containerd

    if not archive.is_file():
        raise LabError(f"--image {archive}: no such file (`make image` builds vpcnet.oci.tar)")
    try:
        containerd.start(layout)
        return containerd.import_image(layout, archive)
    except containerd.ContainerdError as exc:
        raise LabError(f"--image {archive}: {exc}") from exc


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def install_cni(layout: LabLayout, info: LabInfo, nodes: Sequence[str]) -> None:
    """What aws-node's entrypoint does on each node: the plugin into the node's CNI bin dir, and the conflist
    (which makes the node Ready for pods) only once the node's agent answers STATUS ready."""
    from vpcnet.cni.install import AgentNotReady, InstallError, install

    settings = agent_env(layout, nodes[0], info) if nodes else {}
    mode_prefix = "cali" if settings.get("VPCNET_MODE") == "calico" else "eni"
    veth_prefix = settings.get("AWS_VPC_K8S_CNI_VETHPREFIX") or mode_prefix
    # In Calico mode pod traffic may cross subnets in VXLAN, which costs 50 bytes of the VPC's 9001.
    mtu = int(settings.get("AWS_VPC_ENI_MTU") or (8951 if mode_prefix == "cali" else 9001))

    def one(node: str) -> None:
        install(
            layout.cni_bin_dir(node),
            layout.cni_conf_dir(node),
            str(layout.agent_socket(node)),
            timeout=AGENT_READY_TIMEOUT,
            interval=0.05,  # a STATUS request on a local socket: cheap, and each poll period is added to up
            mtu=mtu,
            veth_prefix=veth_prefix,
        )

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = {node: pool.submit(one, node) for node in nodes}
    failed = []
    for node, fut in futures.items():
        exc = fut.exception()
        if isinstance(exc, AgentNotReady):
            # The log itself: a lab that fails while being built is removed, its logs with it.
            log = layout.agent_log(node)
            tail = _tail(log)
            failed.append(
                f"{node}: {exc}; {log} ends with:\n{tail}" if tail else f"{node}: {exc} ({log} is empty)"
            )
        elif isinstance(exc, InstallError):
            failed.append(f"{node}: {exc} (from the agent settings)")
        elif exc is not None:
            raise exc
    if failed:
        raise LabError("nodes did not turn Ready: " + "; ".join(failed))


# ------------------------------------------------------------------ up


@dataclass(frozen=True)
class UpResult:
    info: LabInfo
    changed: list[str]  # what this run did; empty when the lab was already up

    @property
    def already_up(self) -> bool:
        return not self.changed


def _same_shape(info: LabInfo, topo: LabTopology) -> str | None:
    """None if the running lab is the one asked for, else what differs."""
    if len(info.nodes) != len(topo.nodes):
        return f"it has {len(info.nodes)} nodes, {len(topo.nodes)} were asked for"
    types = {n.instance_type for n in info.nodes}
    wanted = {n.instance_type for n in topo.nodes}
    if types != wanted:
        return f"its instance type is {', '.join(sorted(types))}, {', '.join(sorted(wanted))} was asked for"
    azs = {n["az"] for n in info.subnets.values()}
    if len(azs) != len(topo.azs):
        return f"it spans {len(azs)} AZs, {len(topo.azs)} were asked for"
    if len(info.subnets) != len(topo.subnets):
        return f"it has {len(info.subnets)} subnets, {len(topo.subnets)} were asked for (--pod-subnets?)"
    if info.vpc_cidr != topo.vpc_cidr:
        return f"its VPC is {info.vpc_cidr}, {topo.vpc_cidr} was asked for"
    return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One `lab up`/`lab down` at a time on this machine (two runs for one prefix would race)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUN_ROOT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class UpOptions:
    """What `lab up` was asked for; a running lab records them (its state file), so that a repair (`lab up`
    again) without flags means "as it was made", not the defaults."""

    nodes: int
    instance_type: str
    azs: int
    pod_subnets: int  # per AZ
    agents: bool
    agent_settings: dict[str, str]
    restart_backoff: str


def recorded_options(info: LabInfo) -> UpOptions:
    return UpOptions(
        nodes=len(info.nodes),
        instance_type=info.nodes[0].instance_type if info.nodes else "t3.medium",
        azs=len({s["az"] for s in info.subnets.values()}),
        pod_subnets=sum(1 for s in info.subnets.values() if s.get("role") == "pod")
        // max(1, len({s["az"] for s in info.subnets.values()})),
        agents=info.agents,
        agent_settings=dict(info.agent_settings),
        restart_backoff=info.restart_backoff,
    )


def up(
    topo: LabTopology,
    layout: LabLayout,
    *,
    agents: bool = True,
    agent_settings: Mapping[str, str] | None = None,
    restart_backoff: str = DEFAULT_RESTART_BACKOFF,
    progress: Progress = lambda _msg: None,
    datastore: str | None = None,
    image: Path | None = None,
    etcd_tls: bool = False,
) -> UpResult:
    """Bring the lab up (or find it up). agent_settings: extra environment for every node agent; datastore:
    what the agents read (lab_datastore's rule when None); restart_backoff: INITIAL:MAX seconds of the agents'
    supervisors (recorded; a repair keeps the lab's); image: an OCI archive (`make image`) the node agents run
    from, as containers, instead of processes."""
    from vpcnet.lab.supervise import parse_backoff

    settings = dict(agent_settings or {})
    chosen = lab_datastore(datastore, settings)
    try:
        parse_backoff(restart_backoff)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    if agents:
        check_agent_settings(layout, settings, chosen)
    if image is not None:
        check_image(image, agents)
    with _locked():
        return _up(
            topo,
            layout,
            agents=agents,
            agent_settings=settings,
            restart_backoff=restart_backoff,
            progress=progress,
            datastore=chosen,
            image=image,
            etcd_tls=etcd_tls,
        )


def _up(
    topo: LabTopology,
    layout: LabLayout,
    *,
    agents: bool,
    agent_settings: dict[str, str],
    restart_backoff: str,
    progress: Progress,
    datastore: str,
    image: Path | None = None,
    etcd_tls: bool = False,
) -> UpResult:
    info = read_info(layout)
    if info is not None:
        differs = _same_shape(info, topo) or _same_settings(info, agents, agent_settings)
        if not differs and agents and info.datastore != datastore:
            differs = f"its agents read the {info.datastore} datastore"
        if not differs and agents and bool(info.agent_image) != (image is not None):
            differs = f"its agents run from {info.agent_image or 'processes'}"
        if not differs and info.etcd_tls != etcd_tls:
            differs = f"its etcd serves {'TLS' if info.etcd_tls else 'plain HTTP'}"
        if differs:
            raise LabError(
                f"lab {layout.prefix} is already up and {differs}; run `vpcnet lab down` first "
                f"(or use another --prefix)"
            )
        return _repair(layout, info, agents=agents, progress=progress)
    leftovers = [n for n in netns.list_netns() if layout.owns_netns(n)]
    if leftovers or layout.run_dir.exists():
        progress(f"removing a half-made lab {layout.prefix}")
        _down(layout)
    return _create(
        topo,
        layout,
        agents=agents,
        agent_settings=agent_settings,
        restart_backoff=restart_backoff,
        progress=progress,
        datastore=datastore,
        image=image,
        etcd_tls=etcd_tls,
    )


def _same_settings(info: LabInfo, agents: bool, settings: dict[str, str]) -> str | None:
    if info.agents and agents and info.agent_settings != settings:
        have = " ".join(f"{k}={v}" for k, v in sorted(info.agent_settings.items())) or "none"
        return f"its agents run with settings {have}"
    return None


def _create(
    topo: LabTopology,
    layout: LabLayout,
    *,
    agents: bool,
    agent_settings: dict[str, str],
    restart_backoff: str,
    progress: Progress,
    datastore: str,
    image: Path | None = None,
    etcd_tls: bool = False,
) -> UpResult:
    from vpcnet.lab.ec2.state import Cloud  # the EC2 emulator (imported here: it loads the instance table)

    layout.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        progress("starting etcd and the lab daemon (EC2 endpoint, IMDS, etcd relay)")
        etcd_url = labetcd.start(layout, tls=etcd_tls)
        # The daemon imports while the lab is built, and loads the EC2 state once told it is written.
        start_daemon(layout, etcd_url, wait_for_go=True)
        progress(f"creating namespaces: VPC, internet and {len(topo.nodes)} nodes")
        fabric = Fabric(layout)
        fabric.create_base(topo.vpc_cidr, [n.name for n in topo.nodes], topo.vpc_ipv6_cidr or None)
        early = agents and image is None
        if early:
            # Their start-up is mostly imports, which need nothing of the lab: they load while it is built
            # and start their components once the gate opens (vpcnet/agent/start_gate.py).
            progress(f"starting node agents on {len(topo.nodes)} nodes (they load, then wait for the lab)")
            from vpcnet.lab.labapi import write_node_kubeconfig

            endpoints = _vpc_endpoints(etcd_url)
            write_node_kubeconfig(layout, endpoints["kubeapi"])  # the agents check it first
            gated = {START_GATE_ENV: str(agents_gate(layout))}
            for spec in topo.nodes:
                env = _agent_env(
                    layout, spec.name, endpoints, agent_settings, datastore, layout.node_kubeconfig
                )
                spawn_agent(layout, spec.name, {**env, **gated}, restart_backoff)
        progress("creating the VPC, subnets and instances")
        cloud = Cloud(layout.ec2_state_file, hooks=fabric, region=topo.region)
        fabric.set_subnet_lookup(lambda sid: cloud.subnet(sid).cidr)
        fabric.set_subnet6_lookup(lambda sid: cloud.subnet(sid).ipv6_cidr)
        vpc = cloud.create_vpc(
            topo.vpc_cidr, tags={"Name": f"{layout.prefix}-vpc"}, ipv6_cidr=topo.vpc_ipv6_cidr or None
        )
        subnet_ids: dict[str, str] = {}
        for s in topo.subnets:
            subnet_ids[s.name] = cloud.create_subnet(
                vpc.id, s.cidr, s.az, tags={"Name": s.name}, ipv6_cidr=s.ipv6_cidr or None
            ).id
        node_group = create_node_group(cloud, vpc.id, layout.prefix, pool_cidrs(agents, agent_settings))
        nodes = [_launch(cloud, layout, topo, n, subnet_ids, node_group) for n in topo.nodes]
        fabric.close()  # from here on the lab daemon's fabric follows the cloud
        go_file(layout).touch()
        # bootstrap_api's client loads while the daemon starts (the lab's API is always a Kubernetes one)
        loading = threading.Thread(target=preload, args=(DatastoreType.KUBERNETES,), daemon=True)
        loading.start()
        progress("waiting for the lab daemon and etcd")
        ready = wait_daemon(layout)
        labetcd.wait_healthy(layout, etcd_url)
        agent_image = ""
        if agents and image is not None:
            progress(f"importing {image} into the lab's containerd")
            agent_image = import_agent_image(layout, image)
        info = LabInfo(
            prefix=layout.prefix,
            vpc_id=vpc.id,
            vpc_cidr=topo.vpc_cidr,
            region=topo.region,
            subnets={s.name: _subnet_json(s, subnet_ids[s.name]) for s in topo.subnets},
            nodes=nodes,
            endpoints=_endpoints(ready, etcd_url),
            internet_host=INTERNET_HOST_ADDRESS,
            agents=agents,
            agent_settings=agent_settings,
            datastore=datastore,
            restart_backoff=restart_backoff,
            agent_image=agent_image,
            etcd_tls=etcd_tls,
        )
        _write_json(layout.state_file, info.to_json())
        controls = control_processes(info)
        progress(f"registering CRDs and Nodes in the lab's Kubernetes API; starting {', '.join(controls)}")
        bootstrap_api(layout, info)
        if early:
            agents_gate(layout).touch()
        for name in controls:
            start_control(layout, name, info)
        if info.agents:
            if not early:
                progress(f"starting node agents on {len(nodes)} nodes")
                for n in nodes:
                    start_agent(layout, n.name, info)
            progress("waiting for the nodes to turn Ready (agent up, CNI config installed)")
            install_cni(layout, info, [n.name for n in nodes])
        if "kube-controllers" in controls:
            wait_mirror(layout)
    except BaseException as e:
        _down(layout)  # never leave a half-made lab behind
        if isinstance(e, (labetcd.EtcdError, netns.KernelError, FabricError, Ec2Error)):
            raise LabError(f"lab {layout.prefix} could not be built (and was removed again): {e}") from e
        raise
    return UpResult(info, ["created"])


def _subnet_json(s: SubnetSpec, subnet_id: str) -> dict[str, str]:
    return {"id": subnet_id, "cidr": s.cidr, "az": s.az, "role": s.role}


def _vpc_endpoints(etcd_host: str) -> dict[str, str]:
    """What the agents reach, at fixed VPC addresses: known before the lab daemon is up."""
    return {
        "ec2": f"http://{EC2_ENDPOINT_ADDRESS}",
        "imds": f"http://{IMDS_ADDRESS}",
        "etcd": f"{urlsplit(etcd_host).scheme}://{ETCD_ENDPOINT_ADDRESS}:{ETCD_VPC_PORT}",
        "kubeapi": f"http://{KUBEAPI_ADDRESS}:{KUBEAPI_PORT}",
    }


def _endpoints(ready: Mapping[str, Any], etcd_host: str) -> dict[str, str]:
    return {
        "kubeapi_host": str(ready["kubeapi_host"]),
        "ec2_host": str(ready["ec2_host"]),
        **_vpc_endpoints(etcd_host),
        "etcd_host": etcd_host,
        "internet": INTERNET_CIDR,
        "internet_http": f"http://{INTERNET_HOST_ADDRESS}",
    }


def pool_cidrs(agents: bool, settings: Mapping[str, str]) -> list[str]:
    """The pod CIDR a calico-mode lab's pods send from (its default pool): not VPC addresses, so the nodes'
    group must allow it, as Calico's AWS guide asks of an operator (pools added later need their own rule)."""
    from vpcnet.agent.config import AgentConfig

    if not agents or settings.get("VPCNET_MODE") != "calico":
        return []
    return [settings.get("CALICO_IPV4POOL_CIDR") or AgentConfig().default_pool_cidr]


def create_node_group(cloud: Any, vpc_id: str, prefix: str, pod_cidrs: Sequence[str] = ()) -> str:
    """The nodes' security group, as EKS's cluster group: all traffic among its members, all egress (the
    fabric enforces groups; the agents give the nodes' secondary ENIs the primary ENI's groups), and all
    from the pod CIDRs that are not VPC addresses."""
    group = cloud.create_security_group(vpc_id, f"{prefix}-nodes", "lab nodes: all traffic among the nodes")
    everything = {
        "IpProtocol": "-1",
        "UserIdGroupPairs": [{"GroupId": group.id}],
        "IpRanges": [{"CidrIp": c, "Description": "pod pool"} for c in pod_cidrs],
    }
    cloud.authorize_security_group(group.id, [everything], egress=False)
    return str(group.id)


def _launch(
    cloud: Any,
    layout: LabLayout,
    topo: LabTopology,
    node: NodeSpec,
    subnet_ids: dict[str, str],
    node_group: str,
) -> NodeInfo:
    subnet = topo.subnet(node.subnet)
    inst = cloud.launch_instance(
        node.instance_type,
        subnet_ids[node.subnet],
        security_group_ids=[node_group],
        tags={NODE_TAG: node.name, "Name": f"{layout.prefix}-{node.name}"},
    )
    eni = cloud.eni(inst.primary_eni_id)
    for d in (layout.cni_conf_dir(node.name), layout.cni_bin_dir(node.name)):
        d.mkdir(parents=True, exist_ok=True)
    return NodeInfo(
        name=node.name,
        netns=layout.node_netns(node.name),
        instance_id=inst.id,
        instance_type=node.instance_type,
        az=node.az,
        subnet=node.subnet,
        subnet_id=subnet_ids[node.subnet],
        subnet_cidr=subnet.cidr,
        primary_ip=eni.primary_ip,
        cni_conf_dir=str(layout.cni_conf_dir(node.name)),
        cni_bin_dir=str(layout.cni_bin_dir(node.name)),
        agent_socket=str(layout.agent_socket(node.name)),
        agent_log=str(layout.agent_log(node.name)),
    )


def _repair(layout: LabLayout, info: LabInfo, *, agents: bool, progress: Progress) -> UpResult:
    """The lab exists: restart whatever is missing, change nothing that is there."""
    changed: list[str] = []
    missing_ns = [
        n
        for n in [layout.vpc_netns, layout.internet_netns, *(x.netns for x in info.nodes)]
        if not netns.netns_exists(n)
    ]
    if missing_ns:
        raise LabError(
            f"lab {layout.prefix} lost namespaces {', '.join(missing_ns)}; run `vpcnet lab down` and up again"
        )
    etcd_url = info.endpoints["etcd_host"]
    if not labetcd.running(layout):
        progress("restarting etcd")
        procs.stop(labetcd.pid_file(layout), str(labetcd.data_dir(layout)))
        etcd_url = labetcd.start(layout)
        changed.append("etcd restarted")
    daemon_up = procs.alive(daemon_pid_file(layout), daemon_marker(layout))
    if not daemon_up or "etcd restarted" in changed:
        progress("restarting the lab daemon")
        procs.stop(daemon_pid_file(layout), daemon_marker(layout))
        kube_port = urlsplit(info.endpoints.get("kubeapi_host", "")).port or 0
        start_daemon(
            layout, etcd_url, urlsplit(info.endpoints["ec2_host"]).port or 0, kube_host_port=kube_port
        )
        changed.append("lab daemon restarted")
    if changed:
        ready = wait_daemon(layout)
        labetcd.wait_healthy(layout, etcd_url)
        info = dataclasses.replace(info, endpoints=_endpoints(ready, etcd_url))
        _write_json(layout.state_file, info.to_json())
        bootstrap_api(layout, info)
    # kube-controllers and the kubelet reconnect by themselves to a restarted API (its host port is kept):
    # only a dead one is restarted.
    for name in control_processes(info):
        if not control_alive(layout, name):
            progress(f"restarting {name}")
            procs.stop(control_pid_file(layout, name), control_marker(layout, name))
            start_control(layout, name, info)
            changed.append(f"{name} restarted")
    if info.agents:
        for n in info.nodes:
            if agent_supervised(layout, n.name):
                continue  # its supervisor restarts it (perhaps after a back-off)
            if not procs.alive(agent_pid_file(layout, n.name), agent_marker(layout, n.name)):
                progress(f"restarting the agent on {n.name}")
                start_agent(layout, n.name, info)
                changed.append(f"agent on {n.name} restarted")
        not_ready = [n.name for n in info.nodes if not (layout.cni_conf_dir(n.name) / CONFLIST_NAME).exists()]
        if not_ready:
            progress(f"installing the CNI plugin on {', '.join(not_ready)}")
            install_cni(layout, info, not_ready)
            changed.append(f"CNI installed on {', '.join(not_ready)}")
    return UpResult(info, changed)


# ------------------------------------------------------------------ down


@dataclass(frozen=True)
class DownResult:
    namespaces: list[str]
    processes: int
    run_dir_removed: bool


def down(layout: LabLayout) -> DownResult:
    with _locked():
        return _down(layout)


def _down(layout: LabLayout) -> DownResult:
    # Our processes, each by its pid file (checked against its command line): the node agents first, while
    # the EC2 endpoint and etcd still answer (an agent may talk to them as it shuts down), then the rest.
    agents: list[tuple[Path, str]] = []
    nodes_dir = layout.run_dir / "nodes"
    if nodes_dir.is_dir():
        for d in nodes_dir.iterdir():  # the supervisor first in the list: it must not restart its agent
            marker = agent_marker(layout, d.name)
            agents.append((supervisor_pid_file(layout, d.name), marker))
            agents.append((agent_pid_file(layout, d.name), marker))
    # The kubelet and kube-controllers go with the agents, before the API and etcd they talk to.
    agents += [(control_pid_file(layout, n), control_marker(layout, n)) for n in CONTROL_PROCESSES]
    services = [
        (daemon_pid_file(layout), daemon_marker(layout)),
        (labetcd.pid_file(layout), str(labetcd.data_dir(layout))),
    ]
    stopped = 0
    for group, timeout in ((agents, AGENT_STOP_TIMEOUT), (services, 3.0)):
        pids = [pid for pid in (procs.read_pid(f, marker) for f, marker in group) if pid is not None]
        procs.kill_pids(pids, timeout)
        stopped += len(pids)
    stopped += _remove_containerd(layout)
    names = [n for n in netns.list_netns() if layout.owns_netns(n)]
    stray = netns.pids_in_netns(names)  # anything else living in the lab (servers tests started in pods...)
    procs.kill_pids(stray, timeout=1.0)
    stopped += len(stray)
    netns.ip_batch([f"netns del {n}" for n in names], force=True)
    left = [n for n in names if netns.netns_exists(n)]
    if left:
        raise LabError(f"could not remove namespaces {', '.join(left)}")
    existed = layout.run_dir.exists()
    shutil.rmtree(layout.run_dir, ignore_errors=True)
    return DownResult(names, stopped, existed)


def _remove_containerd(layout: LabLayout) -> int:
    """The lab's containerd (`lab up --image`), its containers, images and dirs: 1 if it was there."""
    from vpcnet.lab import containerd

    return int(containerd.remove(layout))


# ------------------------------------------------------------------ status, exec


def eni_table(layout: LabLayout) -> dict[str, list[dict[str, Any]]]:
    """Per instance id, its attached ENIs (device order) with addresses and prefixes, read from the EC2
    state file (written atomically after every change, so it is what the endpoint answers)."""
    try:
        raw = json.loads(layout.ec2_state_file.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for e in raw.get("network_interfaces", []):
        att = e.get("attachment")
        if not att:
            continue
        out.setdefault(att["instance_id"], []).append(
            {
                "id": e["id"],
                "device_index": att["device_index"],
                "mac": e["mac"],
                "subnet_id": e["subnet_id"],
                "primary_ip": e["primary_ip"],
                "secondary_ips": list(e.get("secondary_ips", [])),
                "prefixes": list(e.get("prefixes", [])),
                "source_dest_check": e.get("source_dest_check", True),
            }
        )
    for enis in out.values():
        enis.sort(key=lambda x: int(x["device_index"]))
    return out


def _agent_state(layout: LabLayout, node: str, enabled: bool) -> str:
    """ready (running, its CNI socket is there), starting, restarting (exited; its supervisor starts it
    again after a back-off), stopped, or disabled (lab up --no-agents)."""
    if not enabled:
        return "disabled"
    if not procs.alive(agent_pid_file(layout, node), agent_marker(layout, node)):
        return "restarting" if agent_supervised(layout, node) else "stopped"
    return "ready" if layout.agent_socket(node).exists() else "starting"


def status(layout: LabLayout) -> dict[str, Any]:
    info = read_info(layout)
    if info is None:
        leftovers = [n for n in netns.list_netns() if layout.owns_netns(n)]
        return {"prefix": layout.prefix, "up": False, "leftover_namespaces": leftovers}
    enis = eni_table(layout)
    nodes = []
    for n in info.nodes:
        node = asdict(n)
        node["enis"] = enis.get(n.instance_id, [])
        node["agent"] = _agent_state(layout, n.name, info.agents)
        nodes.append(node)
    return {
        "prefix": layout.prefix,
        "up": True,
        "vpc": {"id": info.vpc_id, "cidr": info.vpc_cidr, "region": info.region},
        "subnets": info.subnets,
        "nodes": nodes,
        "endpoints": info.endpoints,
        "internet_host": info.internet_host,
        "agent_settings": info.agent_settings,
        "agent_image": info.agent_image,
        "datastore": info.datastore,
        "processes": {
            "etcd": labetcd.running(layout),
            "cloudd": procs.alive(daemon_pid_file(layout), daemon_marker(layout)),
            **{name: control_alive(layout, name) for name in control_processes(info)},
        },
        "kubeconfig": str(layout.kubeconfig),
        "run_dir": str(layout.run_dir),
    }


def exec_in_node(layout: LabLayout, node: str, argv: Sequence[str]) -> int:
    """Run argv in the node's namespace (in the foreground), returning its exit code. The names `vpc` and
    `inet` stand for the VPC router's and the internet's namespaces, NAMESPACE/POD for a pod's."""
    info = read_info(layout)
    if info is None:
        raise LabError(f"lab {layout.prefix} is not up (`vpcnet lab up`)")
    if not argv:
        raise LabError("nothing to run: give a command after --")
    special = {"vpc": layout.vpc_netns, "inet": layout.internet_netns}
    if "/" in node:  # a pod, as NAMESPACE/NAME
        namespace, _, pod = node.partition("/")
        target = layout.pod_netns(namespace, pod)
        if not netns.netns_exists(target):
            raise LabError(f"pod {node} is not running in lab {layout.prefix} (`vpcnet get pods -A`)")
    else:
        target = special.get(node) or info.node(node).netns
    return subprocess.call(["ip", "netns", "exec", target, *argv])
