"""The lab kubelet: runs the lab's Pods (read from its Kubernetes API) on the lab's nodes, as kubelet and a
runtime would.

For each pod bound to a lab node: a network namespace `{prefix}-pod-<ns>-<pod>`, then CNI ADD by exec of the
plugins of the node's conflist (installed by `vpcnet install-cni` into the node's CNI dirs), then the pod
server answers on its containerPorts. The kubelet records what it did in two places:

- a runtime record per pod under `layout.node_dir(node)/pods/` (container id, namespace path, the CNI result
  that DEL needs as prevResult, like libcni's result cache) — the kernel side, so DEL works even when the
  datastore object is gone;
- the Pod in the API (vpcnet.lab.podsource): spec.nodeName (the binding), status (phase, conditions,
  podIP/podIPs, hostIP, startTime, through the status subresource) and annotations with the
  container id, host interface and ENI (what `vpcnet get pods -o wide` shows and the policy agent reads).

`sync` makes the nodes match the API: it starts what is missing, stops what is no longer stored (the lab's
kubelet daemon, vpcnet.lab.kubeletd, runs it on every change it watches).
Everything is idempotent, and a failing ADD is rolled back (CNI DEL, namespace removed): it leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vpcnet.api.core import Pod
from vpcnet.lab import procs
from vpcnet.lab.cniexec import (
    SYSTEM_CNI_PATHS,
    CniError,
    CniExecutor,
    ConfigError,
    PodSandbox,
    load_network_list,
    result_host_interface,
    result_ip,
    result_ips,
)
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.podserver import PodServerClient, PodServerError, PortSpec, start_pod_server

log = logging.getLogger(__name__)

ANNOTATION_CONTAINER_ID = "vpcnet.io/container-id"
ANNOTATION_INTERFACE = "vpcnet.io/host-interface"
ANNOTATION_ENI = "vpcnet.io/eni"
ANNOTATION_POD_IPS = "vpc.amazonaws.com/pod-ips"  # what the VPC CNI writes with ANNOTATE_POD_IP=true
KUBELET_ANNOTATIONS = (ANNOTATION_CONTAINER_ID, ANNOTATION_INTERFACE, ANNOTATION_ENI, ANNOTATION_POD_IPS)
START_CONCURRENCY = 8


class SchedulingError(ValueError):
    """A pod cannot be placed; the message names the pod and the field."""


class PodStartError(RuntimeError):
    """A pod could not be started (everything it did was undone); names the pod and the cause."""


@dataclass(frozen=True)
class LabNode:
    name: str
    az: str = ""
    primary_ip: str = ""


def lab_nodes(layout: LabLayout) -> list[LabNode]:
    """The nodes of the running lab, from the state file `lab up` writes; [] when no lab is up."""
    try:
        state = json.loads(layout.state_file.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"lab state {layout.state_file} is unreadable: {exc}") from None
    nodes = state.get("nodes", []) if isinstance(state, dict) else []
    out = []
    for entry in nodes:
        if isinstance(entry, str):
            out.append(LabNode(entry))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            ip = entry.get("primary_ip") or entry.get("primaryIp") or entry.get("ip") or ""
            out.append(LabNode(entry["name"], str(entry.get("az", "")), str(ip)))
    return out


def schedule(
    pods: Sequence[Pod], nodes: Sequence[str], load: Mapping[str, int] | None = None
) -> dict[str, str]:
    """A node for every pod: its spec.nodeName when set (which must be a lab node), else the node with the
    fewest pods (counting `load`, the pods already there, and the ones placed now; ties go to the first
    node in `nodes`). Returns {"<ns>/<pod>": node}."""
    if not nodes:
        raise SchedulingError("no lab nodes to schedule pods on (is the lab up?)")
    counts = {node: 0 for node in nodes}
    for node, n in (load or {}).items():
        if node in counts:
            counts[node] += n
    placed: dict[str, str] = {}
    for pod in pods:
        if pod.node_name is not None:
            if pod.node_name not in counts:
                raise SchedulingError(
                    f"Pod {pod.ref}: spec.nodeName: {pod.node_name!r} is not a lab node "
                    f"(nodes: {', '.join(nodes)})"
                )
            placed[pod.ref] = pod.node_name
            counts[pod.node_name] += 1
    for pod in pods:
        if pod.node_name is None:
            node = min(nodes, key=lambda n: counts[n])  # min keeps the first of equals
            placed[pod.ref] = node
            counts[node] += 1
    return placed


def pod_ports(pod: Pod) -> list[PortSpec]:
    ports = {PortSpec(p.container_port, p.protocol) for c in pod.containers for p in c.ports}
    return sorted(ports)


def host_port_mappings(pod: Pod) -> tuple[dict[str, Any], ...]:
    """runtimeConfig.portMappings for containerPorts with a hostPort, as containerd passes them to portmap."""
    out = []
    for container in pod.containers:
        for port in container.ports:
            host_port = port.extra.get("hostPort")
            if isinstance(host_port, int) and host_port > 0:
                out.append(
                    {
                        "hostPort": host_port,
                        "containerPort": port.container_port,
                        "protocol": port.protocol.lower(),
                    }
                )
    return tuple(out)


def container_id(namespace: str, name: str, uid: str) -> str:
    """The pod sandbox id: 64 hex characters like containerd's, derived from the pod's uid so that a kubelet
    interrupted half-way can find (and DEL) what it started."""
    return hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()


@dataclass
class PodRecord:
    """What the kubelet knows about a pod it started (kept under the node's dir, like libcni's cache)."""

    namespace: str
    name: str
    uid: str
    node: str
    container_id: str
    netns: str
    ports: list[dict[str, Any]] = field(default_factory=list)
    # runtimeConfig.portMappings given at ADD; DEL passes them again (as libcni's cache does), without them
    # portmap's DEL removes nothing.
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    ip: str | None = None
    interface: str | None = None
    eni: str | None = None
    cni_result: dict[str, Any] | None = None
    conflist: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def port_specs(self) -> list[PortSpec]:
        return [PortSpec(int(p["port"]), str(p["protocol"])) for p in self.ports]


class PodRuntime:
    """The kernel side: namespaces, CNI, pod servers, runtime records."""

    def __init__(self, layout: LabLayout) -> None:
        self.layout = layout

    # -- records ---------------------------------------------------------------------------------
    def record_dir(self, node: str) -> Path:
        return self.layout.node_dir(node) / "pods"

    def record_path(self, node: str, namespace: str, name: str) -> Path:
        return self.record_dir(node) / f"{namespace}_{name}.json"

    def save(self, record: PodRecord) -> None:
        path = self.record_path(record.node, record.namespace, record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1, sort_keys=True))
        os.replace(tmp, path)

    def records(self, nodes: Sequence[str]) -> list[PodRecord]:
        out = []
        for node in nodes:
            directory = self.record_dir(node)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                try:
                    out.append(PodRecord(**json.loads(path.read_text())))
                except (OSError, ValueError, TypeError) as exc:
                    log.warning("ignoring unreadable pod record %s: %s", path, exc)
        return out

    # -- pieces ----------------------------------------------------------------------------------
    def pod_server(self, node: str) -> PodServerClient:
        node_dir = self.layout.node_dir(node)
        return start_pod_server(
            node_dir / "podserver.sock",
            node_dir / "podserver.log",
            netns=self.layout.node_netns(node),
            pid_path=node_dir / "podserver.pid",
        )

    def executor(self, node: str) -> CniExecutor:
        bin_dirs = [self.layout.cni_bin_dir(node), *(Path(p) for p in SYSTEM_CNI_PATHS)]
        return CniExecutor(bin_dirs=bin_dirs, host_netns=self.layout.node_netns(node))

    def sandbox(self, record: PodRecord, pod: Pod | None = None) -> PodSandbox:
        return PodSandbox(
            namespace=record.namespace,
            name=record.name,
            container_id=record.container_id,
            netns_path=record.netns_path,
            uid=record.uid,
            port_mappings=host_port_mappings(pod) if pod is not None else tuple(record.port_mappings),
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, pod: Pod, node: str, uid: str) -> PodRecord:
        """Start `pod` on `node` (idempotent). On any failure everything done is undone and PodStartError
        raised."""
        namespace, name = pod.metadata.namespace or "default", pod.metadata.name
        existing = self._existing(node, namespace, name)
        if existing is not None and existing.uid == uid and Path(existing.netns_path).exists():
            # Already running: make sure the server answers on the current ports (a restarted server).
            existing.ports = [{"port": p.port, "protocol": p.protocol} for p in pod_ports(pod)]
            self.pod_server(node).serve(existing.ref, existing.netns_path, existing.port_specs())
            self.save(existing)
            return existing
        if existing is not None:
            self.stop(existing)  # a different incarnation (or half-started): clear it first
        elif Path(f"/run/netns/{self.layout.pod_netns(namespace, name)}").exists():
            # Ours by name, but without a record (a record removed by hand): nothing can be using it.
            subprocess.run(
                ["ip", "netns", "del", self.layout.pod_netns(namespace, name)], capture_output=True
            )
        record = PodRecord(
            namespace=namespace,
            name=name,
            uid=uid,
            node=node,
            container_id=container_id(namespace, name, uid),
            netns=self.layout.pod_netns(namespace, name),
            ports=[{"port": p.port, "protocol": p.protocol} for p in pod_ports(pod)],
            port_mappings=list(host_port_mappings(pod)),
        )
        # Record first: whatever happens next, a later sync or delete can find and undo it.
        self.save(record)
        try:
            netlist = load_network_list(self.layout.cni_conf_dir(node))
            record.conflist = str(netlist.source)
            self.save(record)
            _run(["ip", "netns", "add", record.netns])
            _run(["ip", "-n", record.netns, "link", "set", "lo", "up"])
            result = self.executor(node).add(netlist, self.sandbox(record, pod))
            record.cni_result = result
            record.ip = result_ip(result)
            record.interface = result_host_interface(result)
            record.eni = result_eni(result)
            self.save(record)
            if record.ip is None:
                raise CniError(netlist.name, "ADD", 0, "the result carries no IP address")
            self.pod_server(node).serve(record.ref, record.netns_path, record.port_specs())
        except (CniError, ConfigError, PodServerError, OSError, subprocess.CalledProcessError) as exc:
            try:
                self.stop(record)
            except Exception as cleanup:  # report the original failure, mention the cleanup one
                raise PodStartError(
                    f"pod {record.ref} on {node}: {exc}; cleanup also failed: {cleanup}"
                ) from exc
            raise PodStartError(f"pod {record.ref} on {node}: {_describe(exc)}") from exc
        return record

    def stop(self, record: PodRecord) -> None:
        """Stop the pod: pod server, CNI DEL, namespace, record. Idempotent; raises only when CNI DEL failed
        (the record is then kept so that a later call retries)."""
        with contextlib.suppress(PodServerError, OSError):
            server = PodServerClient(self.layout.node_dir(record.node) / "podserver.sock")
            if server.alive():
                server.stop(record.ref)
        error: Exception | None = None
        if Path(record.netns_path).exists() or record.cni_result is not None:
            try:
                netlist = load_network_list(self.layout.cni_conf_dir(record.node))
                self.executor(record.node).delete(netlist, self.sandbox(record), record.cni_result)
            except ConfigError:
                pass  # no CNI config left on the node: nothing of ours can be wired there
            except CniError as exc:
                error = exc
        subprocess.run(["ip", "netns", "del", record.netns], capture_output=True, check=False)
        if error is not None:
            raise PodStartError(f"pod {record.ref} on {record.node}: CNI DEL failed: {error}")
        self.record_path(record.node, record.namespace, record.name).unlink(missing_ok=True)

    def _existing(self, node: str, namespace: str, name: str) -> PodRecord | None:
        path = self.record_path(node, namespace, name)
        try:
            return PodRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            return None


def result_eni(result: Mapping[str, Any]) -> str | None:
    """The ENI the pod's address belongs to, when the plugin reports it (the vpcnet agent adds it to the
    result under "vpcnet": {"eni": ...}; other plugins do not)."""
    extra = result.get("vpcnet")
    if isinstance(extra, dict) and isinstance(extra.get("eni"), str):
        return str(extra["eni"])
    return None


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode(errors="replace").strip() if isinstance(exc.stderr, bytes) else ""
        return f"{' '.join(map(str, exc.cmd))} failed: {err or exc.returncode}"
    return str(exc)


def new_uid() -> str:
    return str(uuid.uuid4())


@dataclass
class SyncReport:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class DesiredPod:
    pod: Pod
    node: str
    uid: str


async def converge(
    runtime: PodRuntime, desired: Sequence[DesiredPod], nodes: Sequence[str]
) -> tuple[SyncReport, dict[str, PodRecord]]:
    """Make the nodes run exactly `desired`: stop records not desired (or moved), start the rest, several at
    a time. Returns the report and the records of the running desired pods."""
    report = SyncReport()
    wanted = {d.pod.ref: d for d in desired}
    for record in runtime.records(nodes):
        want = wanted.get(record.ref)
        if want is None or want.node != record.node or want.uid != record.uid:
            try:
                await asyncio.to_thread(runtime.stop, record)
                report.stopped.append(record.ref)
            except PodStartError as exc:
                report.failed[record.ref] = str(exc)
    limit = asyncio.Semaphore(START_CONCURRENCY)
    running: dict[str, PodRecord] = {}

    async def start(item: DesiredPod) -> None:
        async with limit:
            try:
                before = runtime._existing(item.node, item.pod.metadata.namespace or "default", item.pod.name)
                record = await asyncio.to_thread(runtime.start, item.pod, item.node, item.uid)
            except PodStartError as exc:
                report.failed[item.pod.ref] = str(exc)
                return
            running[item.pod.ref] = record
            if before is None or before.ip is None:
                report.started.append(item.pod.ref)

    await asyncio.gather(*(start(d) for d in desired))
    report.started.sort()
    return report, running


# -- the datastore side ----------------------------------------------------------------------------------


def _copy(body: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    assert isinstance(out, dict)
    return out


def _without_version(body: Mapping[str, Any]) -> dict[str, Any]:
    out = _copy(body)
    out.get("metadata", {}).pop("resourceVersion", None)
    return out


def pod_conditions(ready: bool, since: str) -> list[dict[str, Any]]:
    """The conditions a kubelet reports for a pod whose sandbox is (or is not) up."""
    status = "True" if ready else "False"
    kinds = (
        ("Initialized", "True"),
        ("Ready", status),
        ("ContainersReady", status),
        ("PodScheduled", "True"),
    )
    return [{"type": t, "status": v, "lastProbeTime": None, "lastTransitionTime": since} for t, v in kinds]


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status_patch(body: dict[str, Any], record: PodRecord, host_ip: str) -> dict[str, Any]:
    """`body` (a stored Pod) with the kubelet's view of the running pod written in."""
    out = _copy(body)
    out.setdefault("spec", {})["nodeName"] = record.node
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[ANNOTATION_CONTAINER_ID] = record.container_id
    for key, value in ((ANNOTATION_INTERFACE, record.interface), (ANNOTATION_ENI, record.eni)):
        if value:
            annotations[key] = value
        else:
            annotations.pop(key, None)
    if record.ip:
        annotations[ANNOTATION_POD_IPS] = record.ip
    status = out.setdefault("status", {})
    status.pop("message", None)
    if status.get("phase") != "Running" or "startTime" not in status:
        since = _now()
        status["startTime"] = status.get("startTime") or since
        status["conditions"] = pod_conditions(True, since)
    status["phase"] = "Running"
    if host_ip:
        status["hostIP"] = host_ip
    if record.ip:
        ips = result_ips(record.cni_result) if record.cni_result else [record.ip]
        status["podIP"] = record.ip
        status["podIPs"] = [{"ip": ip} for ip in ips or [record.ip]]
    return out


def pod_failed_patch(body: dict[str, Any], node: str, message: str) -> dict[str, Any]:
    out = _copy(body)
    out.setdefault("spec", {})["nodeName"] = node
    annotations = out.setdefault("metadata", {}).get("annotations", {})
    for key in KUBELET_ANNOTATIONS:
        annotations.pop(key, None)
    status = out.setdefault("status", {})
    for key in ("podIP", "podIPs", "hostIP"):
        status.pop(key, None)
    status["phase"] = "Pending"
    status["message"] = message
    if not any(c.get("type") == "Ready" and c.get("status") == "False" for c in status.get("conditions", [])):
        status["conditions"] = pod_conditions(False, _now())
    return out


class Kubelet:
    """Runs the Pods of a pod source (the lab API: ApiPods, or a bare etcd: StorePods) on the lab nodes."""

    def __init__(self, layout: LabLayout, pods: Any, nodes: Sequence[LabNode] | None = None) -> None:
        self.layout = layout
        self.pods = pods  # vpcnet.lab.podsource.PodSource
        self.nodes = list(nodes) if nodes is not None else lab_nodes(layout)
        self.runtime = PodRuntime(layout)

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    async def sync(self) -> SyncReport:
        """One pass at a time per lab: two commands syncing at once would race on the same pods (one's
        rollback undoing the other's ADD), so the pass holds the lab's kubelet lock."""
        if not self.nodes:
            return SyncReport()
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.run_dir / "kubelet.lock", "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            return await self._sync()

    async def _sync(self) -> SyncReport:
        from vpcnet.api.loader import parse_resource

        pods: list[Pod] = []
        for body in await self.pods.list():
            meta = body.get("metadata", {})
            if meta.get("deletionTimestamp"):
                continue  # being deleted: stopped below like a deleted pod
            resource = parse_resource(
                _without_version(body), f"pod {meta.get('namespace')}/{meta.get('name')}"
            )
            if isinstance(resource, Pod) and not resource.host_network:
                pods.append(resource)
        names = self.node_names
        # Bind: pods without a node (or without a uid) get one, written back before anything runs.
        load: dict[str, int] = {}
        for pod in pods:
            if pod.node_name:
                load[pod.node_name] = load.get(pod.node_name, 0) + 1
        unbound = [pod for pod in pods if pod.node_name is None]
        placement = schedule(unbound, names, load) if unbound else {}
        desired: list[DesiredPod] = []
        bound: list[Pod] = []
        for pod in pods:
            node = pod.node_name or placement[pod.ref]
            uid = pod.metadata.extra.get("uid")
            if pod.node_name is None or not isinstance(uid, str) or not uid:
                uid = uid if isinstance(uid, str) and uid else new_uid()

                def bind(body: dict[str, Any], node: str = node, uid: str = uid) -> dict[str, Any]:
                    out = _copy(body)
                    out.setdefault("spec", {}).setdefault("nodeName", node)
                    out.setdefault("metadata", {}).setdefault("uid", uid)
                    return out

                fresh = await self.pods.update(pod.metadata.namespace or "default", pod.name, bind)
                if fresh is None:
                    continue
                reparsed = parse_resource(_without_version(fresh), pod.ref)
                assert isinstance(reparsed, Pod)
                pod = reparsed
                node = pod.node_name or node
                uid = str(pod.metadata.extra.get("uid", uid))
            if node in names:
                desired.append(DesiredPod(pod, node, uid))
                bound.append(pod)
        report, running = await converge(self.runtime, desired, names)
        await asyncio.to_thread(self._fill_enis, list(running.values()))
        host_ips = {n.name: n.primary_ip for n in self.nodes}
        for pod in bound:
            namespace = pod.metadata.namespace or "default"
            record = running.get(pod.ref)
            if record is not None:
                rec = record
                await self.pods.update(
                    namespace, pod.name, lambda b, r=rec: pod_status_patch(b, r, host_ips.get(r.node, ""))
                )
            elif pod.ref in report.failed:
                message = report.failed[pod.ref]
                node = pod.node_name or ""
                await self.pods.update(
                    namespace, pod.name, lambda b, n=node, m=message: pod_failed_patch(b, n, m)
                )
        return report

    def records(self) -> list[PodRecord]:
        return self.runtime.records(self.node_names)

    def _fill_enis(self, records: list[PodRecord]) -> None:
        """Look up the ENI of pods that do not know theirs yet ("" once looked up and not on an ENI)."""
        unknown = [r for r in records if r.eni is None and r.ip]
        if not unknown:
            return
        from vpcnet.lab.eniinfo import lookup_enis

        try:
            # IPv4 pods only: an IPv6 pod's address is in its node's /80 (the primary ENI's)
            owners = lookup_enis(self.layout, [r.ip for r in unknown if r.ip and ":" not in r.ip])
        except Exception as exc:  # the ENI is a nicety for `get -o wide`; never fail a pod over it
            log.warning("ENI lookup failed: %s", exc)
            return
        for record in unknown:
            if record.ip in owners:
                record.eni = owners[record.ip]
                self.runtime.save(record)

    def stop_all(self) -> SyncReport:
        """Stop every pod the kubelet started on the lab's nodes, and the pod servers (for `lab down`)."""
        if self.layout.run_dir.is_dir():
            with open(self.layout.run_dir / "kubelet.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return self._stop_all()
        return self._stop_all()

    def _stop_all(self) -> SyncReport:
        report = SyncReport()
        for record in self.records():
            try:
                self.runtime.stop(record)
                report.stopped.append(record.ref)
            except PodStartError as exc:
                report.failed[record.ref] = str(exc)
        for node in self.node_names:
            socket_path = self.layout.node_dir(node) / "podserver.sock"
            PodServerClient(socket_path).shutdown()
            # And by pid, in case it no longer answers on its socket (checked to still be ours first).
            procs.stop(self.layout.node_dir(node) / "podserver.pid", str(socket_path), timeout=2.0)
        return report
