"""deploy/ and the agent agree: every variable the manifests set is one the agent reads, every variable the
agent reads is documented in the ConfigMap, the ConfigMap's values are the agent's defaults, and the paths,
ports and commands the DaemonSet uses are the ones the image build and the agent have."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from deployfiles import DEPLOY, IMAGE_SCRIPTS, find, script

from vpcnet.agent.config import ENV_NAMES, load_config
from vpcnet.cli.main import app

# Read by the agent as second names of a setting; the ConfigMap's comments name them.
ALIASES = {"VPCNET_EC2_ENDPOINT", "AWS_DEFAULT_REGION", "VPCNET_ETCD_ENDPOINTS", "MY_NODE_NAME"}


# What the kubelet gives every pod (the service address) and, standing in for the service account's token,
# a kubeconfig: the agent in the DaemonSet reads the Kubernetes API.
_KUBECONFIG = Path(tempfile.mkdtemp(prefix="vpcnet-deploy-")) / "kubeconfig"
_KUBECONFIG.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
IN_POD = {
    "KUBERNETES_SERVICE_HOST": "10.100.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBECONFIG": str(_KUBECONFIG),
}


class _Recording(Mapping[str, str]):
    """The pod's environment (IN_POD) that remembers every variable asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return IN_POD[key]

    def __iter__(self) -> Iterator[str]:
        return iter(IN_POD)

    def __len__(self) -> int:
        return len(IN_POD)


def agent_variables() -> set[str]:
    """Every environment variable load_config reads in a pod (the settings' own, not the pod's given ones)."""
    env = _Recording()
    load_config(env)
    return env.asked - set(IN_POD)


def configmap() -> dict[str, str]:
    return dict(find("ConfigMap", "vpcnet-config")["data"])


def pod_spec() -> dict[str, Any]:
    return dict(find("DaemonSet", "vpcnet-node")["spec"]["template"]["spec"])


def agent_container() -> dict[str, Any]:
    return next(c for c in pod_spec()["containers"] if c["name"] == "vpcnet-node")


def daemonset_env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in agent_container()["env"]}


def test_the_recording_sees_the_agent_read_its_variables() -> None:
    names = agent_variables()
    assert set(ENV_NAMES.values()) - set(IN_POD) <= names
    assert {"DISABLE_METRICS", "DISABLE_INTROSPECTION"} | ALIASES <= names


def test_every_variable_set_by_the_manifests_is_read_by_the_agent() -> None:
    read = agent_variables()
    assert set(configmap()) - read == set()
    assert set(daemonset_env()) - read == set()


def test_every_agent_variable_is_set_or_documented_in_the_configmap() -> None:
    text = (DEPLOY / "configmap.yaml").read_text()
    missing = {v for v in agent_variables() if not re.search(rf"\b{v}\b", text)}
    assert missing == set()
    given = set(configmap()) | set(daemonset_env())
    assert agent_variables() - given == ALIASES - {"MY_NODE_NAME"}


def test_configmap_and_daemonset_give_the_agents_defaults() -> None:
    """The ConfigMap documents the defaults as values: loading it changes nothing but the node's name."""
    env = {**IN_POD, **configmap()}
    for name, entry in daemonset_env().items():
        env[name] = entry.get("value", "node-1")  # fieldRef: the kubelet fills in spec.nodeName
    assert daemonset_env()["MY_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert load_config(env) == replace(load_config(IN_POD), node_name="node-1")


def test_daemonset_paths_are_the_ones_the_plugin_was_built_with() -> None:
    build = script("build")
    env = daemonset_env()
    assert env["VPCNET_AGENT_SOCKET"]["value"] == build.AGENT_SOCKET
    mounts = {m["mountPath"]: m for m in agent_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    # the socket and checkpoint live in a host directory: the plugin on the node dials the socket
    for path in (env["VPCNET_AGENT_SOCKET"]["value"], env["AWS_VPC_K8S_CNI_BACKING_STORE"]["value"]):
        mount = mounts[str(Path(path).parent)]
        assert volumes[mount["name"]]["hostPath"]["path"] == str(Path(path).parent)
    assert volumes[mounts["/host/opt/cni/bin"]["name"]]["hostPath"]["path"] == build.CNI_BIN
    assert volumes[mounts["/host/etc/cni/net.d"]["name"]]["hostPath"]["path"] == "/etc/cni/net.d"
    for host_path in ("/var/log/aws-routed-eni", "/run/xtables.lock", "/var/run/netns", "/lib/modules"):
        assert host_path in {v["hostPath"]["path"] for v in volumes.values()}


def test_init_container_runs_the_images_installer_into_the_mounted_bin_dir() -> None:
    build = script("build")
    (init,) = pod_spec()["initContainers"]
    assert init["command"][0] == build.NODE_INIT
    target = init["command"][1]
    assert target in {m["mountPath"] for m in init["volumeMounts"]}
    installer = (IMAGE_SCRIPTS / "node-init.sh").read_text()
    assert f"src={build.CNI_BIN}\n" in installer
    assert build.SHIM_DIR.removeprefix(f"{build.CNI_BIN}/") + "/shim.py" in installer
    for plugin in ("vpcnet-cni", *build.EXTRA_CNI_PLUGINS):
        assert plugin in installer


def test_ports_and_probes_are_the_agents() -> None:
    container = agent_container()
    cfg = load_config({**IN_POD, **configmap()})
    assert [p["containerPort"] for p in container["ports"]] == [cfg.metrics_port] == [61678]
    assert cfg.introspection_address is not None
    host, _, port = cfg.introspection_address.rpartition(":")
    daemon = (Path(__file__).resolve().parents[3] / "vpcnet/agent/daemon.py").read_text()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert (get["host"], get["port"]) == (host, int(port))
        assert f'.route("{get["path"]}",' in daemon
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health"


def _command(path: list[str]) -> Any:
    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]  # type: ignore[attr-defined]
    return group


def test_post_start_writes_the_conflist_with_options_install_cni_has() -> None:
    argv = agent_container()["lifecycle"]["postStart"]["exec"]["command"]
    assert argv[:2] == ["vpcnet", "install-cni"]
    options = {o for p in _command(["install-cni"]).params for o in p.opts}
    given = {a.split("=", 1)[0] for a in argv[2:]}
    assert given <= options and "--conf-only" in given


def test_image_runs_vpcnet_from_its_path() -> None:
    build = script("build")
    config = build.image_config(build.version())
    assert config["Entrypoint"] == ["vpcnet"] and config["Cmd"] == ["agent"]
    assert f"{build.VENV}/bin" in next(e for e in config["Env"] if e.startswith("PATH=")).split("=", 1)[1]
    assert agent_container()["command"] == ["vpcnet"] and agent_container()["args"] == ["agent"]
    _command(["agent"])


def test_kube_controllers_command_exists() -> None:
    deployment = find("Deployment", "vpcnet-kube-controllers")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _command(container["args"])


def test_daemonset_shape() -> None:
    daemonset = find("DaemonSet", "vpcnet-node")
    spec = pod_spec()
    assert daemonset["metadata"]["namespace"] == "kube-system"
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    assert spec["hostNetwork"] is True and spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == "vpcnet-node"
    assert "privileged" not in str(spec["initContainers"])


def test_kube_controllers_has_a_lease_and_a_disruption_budget() -> None:
    deployment = find("Deployment", "vpcnet-kube-controllers")
    assert deployment["spec"]["replicas"] == 1
    pdb = find("PodDisruptionBudget", "vpcnet-kube-controllers")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    role = find("Role", "vpcnet-kube-controllers")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"leases"}
    for name in ("vpcnet-node", "vpcnet-kube-controllers"):
        cluster_role = find("ClusterRole", name)
        assert "leases" not in str(cluster_role), f"{name}: leases only through the namespaced Role"
        assert "*" not in str(cluster_role["rules"]), f"{name}: no wildcard rights"


def test_branch_controller_deployment_runs_the_command_with_variables_it_reads() -> None:
    deployment = find("Deployment", "vpcnet-branch-controller")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "vpcnet-branch-controller"
    (container,) = spec["containers"]
    assert container["command"] == ["vpcnet"]
    command = _command(container["args"])
    # Read by the command: its options' variables, and the region and endpoint it takes from the environment.
    read = {p.envvar for p in command.params if p.envvar} | {"AWS_REGION", "AWS_EC2_ENDPOINT"}
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= read
    for entry in env.values():
        ref = entry.get("valueFrom", {}).get("configMapKeyRef")
        if ref is not None:
            assert ref["name"] == "vpcnet-config" and ref["key"] in configmap()
    role = find("ClusterRole", "vpcnet-branch-controller")
    assert "*" not in str(role["rules"]) and "delete" not in str(role["rules"])
    binding = find("ClusterRoleBinding", "vpcnet-branch-controller")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vpcnet-branch-controller", "namespace": "kube-system"}
    ]
