"""Node agents from the built image (`lab up --image`, `lab upgrade --image`): each node's agent a container
of the lab's containerd, sharing the node's network namespace, shaped by the manifests in deploy/ as a
cluster's kubelet would run it: the DaemonSet's command, mounts (host paths pointed at the lab node's own
dirs) and environment (the ConfigMap's, then the DaemonSet's own), under the lab's settings (its endpoints,
node name, datastore and `--agent-env`), which win.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpcnet.datastore.settings import CA_CERT_VARIABLE, CERT_VARIABLE, KEY_VARIABLE
from vpcnet.lab import containerd, procs
from vpcnet.lab.layout import LabLayout

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
AGENT_CONTAINER = "vpcnet-node"  # the DaemonSet's agent container
CONTAINER_KUBECONFIG = "/etc/vpcnet/kubeconfig"  # where the node-side kubeconfig is mounted
CONTAINER_ETCD_TLS = "/etc/vpcnet/etcd-tls"  # where the etcd client Secret is mounted (`lab up --etcd-tls`)
TLS_VARIABLES = (CA_CERT_VARIABLE, CERT_VARIABLE, KEY_VARIABLE)
# The lab's own settings for an agent (from labctl.agent_env); everything else is the manifests'.
LAB_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "VPCNET_NODE_NAME",
    "VPCNET_DATASTORE_ENDPOINTS",
    "VPCNET_DATASTORE_TYPE",
)


class ManifestError(RuntimeError):
    """deploy/ lacks what the lab needs to run the image as the DaemonSet would."""


@dataclass(frozen=True)
class AgentManifest:
    command: list[str]
    env: dict[str, str]  # ConfigMap data, then the container's literal env (fieldRefs resolved per node)
    node_name_vars: list[str]  # env vars the DaemonSet fills from spec.nodeName
    mounts: list[tuple[str, str, bool, bool]]  # host path, container path, read-only, host-to-container


def _load_yaml(name: str) -> Any:
    import yaml

    path = DEPLOY_DIR / name
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror} (`lab up --image` runs from a checkout)") from exc


def load_manifest() -> AgentManifest:
    """The agent container of deploy/daemonset.yaml with its ConfigMap (deploy/configmap.yaml)."""
    ds = _load_yaml("daemonset.yaml")
    spec = ds["spec"]["template"]["spec"]
    found = [c for c in spec["containers"] if c["name"] == AGENT_CONTAINER]
    if not found:
        raise ManifestError(f"{DEPLOY_DIR / 'daemonset.yaml'} has no container {AGENT_CONTAINER!r}")
    container = found[0]
    env = {str(k): str(v) for k, v in (_load_yaml("configmap.yaml").get("data") or {}).items()}
    node_name_vars = []
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            node_name_vars.append(var["name"])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for m in container.get("volumeMounts", []):
        host = volumes.get(m["name"], {}).get("hostPath", {}).get("path")
        if host is None:
            raise ManifestError(f"volume {m['name']!r} of {AGENT_CONTAINER} is not a hostPath")
        slave = m.get("mountPropagation") == "HostToContainer"
        mounts.append((str(host), str(m["mountPath"]), bool(m.get("readOnly")), slave))
    command = [*container.get("command", []), *container.get("args", [])]
    return AgentManifest(command, env, node_name_vars, mounts)


def node_host_paths(layout: LabLayout, node: str) -> dict[str, Path]:
    """The DaemonSet's node paths that are per node in the lab (the rest are the host's: /var/run/netns,
    /lib/modules, the xtables lock, which the lab's process agents share too)."""
    node_dir = layout.node_dir(node)
    return {
        "/opt/cni/bin": layout.cni_bin_dir(node),
        "/etc/cni/net.d": layout.cni_conf_dir(node),
        "/var/run/vpcnet": node_dir,
        "/var/log/aws-routed-eni": node_dir / "log",
    }


def container_mounts(manifest: AgentManifest, layout: LabLayout, node: str) -> list[str]:
    per_node = node_host_paths(layout, node)
    out = []
    for host, target, read_only, slave in manifest.mounts:
        src = per_node.get(host, Path(host))
        if host.endswith(".lock"):
            src.touch(exist_ok=True)  # FileOrCreate
        else:
            src.mkdir(parents=True, exist_ok=True)  # DirectoryOrCreate
        options = ["rbind", "ro" if read_only else "rw", *(["rslave"] if slave else [])]
        out.append(f"type=bind,src={src},dst={target},options={':'.join(options)}")
    out.append(f"type=bind,src={layout.node_kubeconfig},dst={CONTAINER_KUBECONFIG},options=rbind:ro")
    return out


def etcd_client_secret(layout: LabLayout, lab_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The etcd client certificate the lab gives its process agents (the VPCNET_DATASTORE_* TLS files of
    lab_env) as a container gets it from a Secret volume: the files copied into the run dir's
    etcd-client-secret/ (mode 0644, a Secret's defaultMode: kube-controllers runs as a user), mounted
    read-only at CONTAINER_ETCD_TLS. Returns (mounts, the variables naming the container's paths); ([], {})
    without TLS."""
    files = {var: Path(lab_env[var]) for var in TLS_VARIABLES if lab_env.get(var)}
    if not files:
        return [], {}
    secret = layout.run_dir / "etcd-client-secret"
    secret.mkdir(mode=0o755, exist_ok=True)
    env = {}
    for var, source in files.items():
        shutil.copyfile(source, secret / source.name)
        (secret / source.name).chmod(0o644)
        env[var] = f"{CONTAINER_ETCD_TLS}/{source.name}"
    return [f"type=bind,src={secret},dst={CONTAINER_ETCD_TLS},options=rbind:ro"], env


def container_env(
    manifest: AgentManifest,
    lab_env: Mapping[str, str],
    settings: Mapping[str, str],
    node: str,
    secret_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ConfigMap's and DaemonSet's environment; the caller's values of ConfigMap keys (as a process
    agent would see them); the lab's endpoints and identity, and the container paths of its etcd client
    Secret (secret_env, from etcd_client_secret); the lab's agent settings last."""
    env = dict(manifest.env)
    node_vars = manifest.node_name_vars
    env.update({k: v for k, v in os.environ.items() if k in manifest.env and k not in node_vars})
    env.update({k: node for k in manifest.node_name_vars})
    env.update({k: lab_env[k] for k in LAB_KEYS if k in lab_env})
    env.update(secret_env or {})
    if "KUBECONFIG" in lab_env:
        env["KUBECONFIG"] = CONTAINER_KUBECONFIG
    env.update(settings)
    return env


def agent_container_prefix(node: str) -> str:
    return f"{node}-agent-"


def start(
    layout: LabLayout,
    node: str,
    image: str,
    lab_env: Mapping[str, str],
    settings: Mapping[str, str],
    *,
    pid_file: Path,
    marker: str,
) -> str:
    """Start node's agent from image (removing a container of an agent that died); returns the container id.
    marker (the agent's socket on the host) rides on ctr's command line, as a process agent's does."""
    manifest = load_manifest()
    for old in containerd.containers(layout):
        if old.startswith(agent_container_prefix(node)):
            containerd.remove_container(layout, old)
    env_file = layout.node_dir(node) / "agent-container.env"
    secret_mounts, secret_env = etcd_client_secret(layout, lab_env)
    env = container_env(manifest, lab_env, settings, node, secret_env)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    container_id = agent_container_prefix(node) + secrets.token_hex(3)
    argv = containerd.run_argv(
        layout,
        image,
        container_id,
        manifest.command,
        netns_path=f"/run/netns/{layout.node_netns(node)}",
        mounts=container_mounts(manifest, layout, node) + secret_mounts,
        env_file=env_file,
        labels=[f"vpcnet.lab.agent-socket={marker}", f"vpcnet.lab.image={image}"],
    )
    procs.spawn(argv, log_file=layout.agent_log(node), pid_file=pid_file)
    return container_id


# ------------------------------------------------------------------ kube-controllers (etcd mode)

CONTROLLERS_CONTAINER = "vpcnet-kube-controllers"
CONTROLLERS_ID = "kube-controllers"
CONTROLLERS_DIR = "/var/run/vpcnet-kube-controllers"  # in the container: its kubeconfig and progress file


@dataclass(frozen=True)
class ControllersManifest:
    command: list[str]
    env: dict[str, str]  # literal values and the ConfigMap's keys resolved
    pod_name_vars: list[str]  # filled from metadata.name
    run_as_user: int | None


def load_controllers_manifest() -> ControllersManifest:
    """The kube-controllers container of deploy/kube-controllers.yaml, its ConfigMap references resolved."""
    docs = [d for d in _load_all("kube-controllers.yaml") if d and d.get("kind") == "Deployment"]
    containers = [c for d in docs for c in d["spec"]["template"]["spec"]["containers"]]
    found = [c for c in containers if c["name"] == CONTROLLERS_CONTAINER]
    if not found:
        where = DEPLOY_DIR / "kube-controllers.yaml"
        raise ManifestError(f"{where} has no container {CONTROLLERS_CONTAINER!r}")
    container = found[0]
    config = {str(k): str(v) for k, v in (_load_yaml("configmap.yaml").get("data") or {}).items()}
    env: dict[str, str] = {}
    pod_name_vars = []
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "configMapKeyRef" in ref:
            env[var["name"]] = config.get(ref["configMapKeyRef"]["key"], "")
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            pod_name_vars.append(var["name"])
    user = container.get("securityContext", {}).get("runAsUser")
    command = [*container.get("command", []), *container.get("args", [])]
    return ControllersManifest(command, env, pod_name_vars, int(user) if user is not None else None)


def _load_all(name: str) -> list[Any]:
    import yaml

    path = DEPLOY_DIR / name
    try:
        return list(yaml.safe_load_all(path.read_text()))
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror} (`lab up --image` runs from a checkout)") from exc


def start_controllers(
    layout: LabLayout,
    image: str,
    *,
    kubeconfig: Path,
    etcd_endpoints: str,
    tls_env: Mapping[str, str],
    progress_file: Path,
    pid_file: Path,
    log_file: Path,
    marker: str,
) -> None:
    """kube-controllers from image, as the Deployment runs it (its user, its environment) on the host's
    network (where the lab's API and etcd answer on loopback); progress_file becomes a link into the
    container's writable dir. tls_env: the lab's etcd client files (labetcd.client_tls_env), mounted as a
    Secret."""
    manifest = load_controllers_manifest()
    for old in containerd.containers(layout):
        if old == CONTROLLERS_ID:
            containerd.remove_container(layout, old)
    host_dir = layout.run_dir / "kube-controllers.d"
    host_dir.mkdir(parents=True, exist_ok=True)
    uid = manifest.run_as_user
    (host_dir / "kubeconfig").write_bytes(kubeconfig.read_bytes())
    (host_dir / "kubeconfig").chmod(0o644)  # the lab's API takes no credentials
    if uid is not None:
        os.chown(host_dir, uid, uid)
    progress_file.unlink(missing_ok=True)
    progress_file.symlink_to(host_dir / "progress.json")
    env = {**manifest.env, **{k: CONTROLLERS_ID for k in manifest.pod_name_vars}}
    env.update({"VPCNET_DATASTORE_TYPE": "etcd", "VPCNET_DATASTORE_ENDPOINTS": etcd_endpoints})
    secret_mounts, secret_env = etcd_client_secret(layout, tls_env)
    env.update(secret_env)
    env_file = host_dir / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    command = [
        *manifest.command,
        "--kubeconfig", f"{CONTROLLERS_DIR}/kubeconfig",
        "--progress-file", f"{CONTROLLERS_DIR}/progress.json",
    ]  # fmt: skip
    if uid is not None:  # runAsUser: ctr has no --user; the image's setpriv drops to it
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    argv = containerd.run_argv(
        layout,
        image,
        CONTROLLERS_ID,
        command,
        netns_path=None,
        mounts=[f"type=bind,src={host_dir},dst={CONTROLLERS_DIR},options=rbind:rw", *secret_mounts],
        env_file=env_file,
        labels=[f"vpcnet.lab.marker={marker}", f"vpcnet.lab.image={image}"],
        privileged=False,
    )
    procs.spawn(argv, log_file=log_file, pid_file=pid_file)
