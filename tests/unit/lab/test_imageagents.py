"""The image agent's container spec comes from deploy/: the DaemonSet's command and mounts (its node paths
pointed at the lab node's dirs), the ConfigMap's and DaemonSet's environment under the lab's settings."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from vpcnet.lab import containerd, imageagents
from vpcnet.lab.layout import LabLayout


def test_manifest_is_the_daemonsets_agent_container() -> None:
    m = imageagents.load_manifest()
    assert m.command == ["vpcnet", "agent"]
    assert m.env["VPCNET_AGENT_SOCKET"] == "/var/run/vpcnet/agent.sock"
    assert m.env["WARM_ENI_TARGET"] == "1"  # from the ConfigMap
    assert m.node_name_vars == ["MY_NODE_NAME"]
    by_target = {target: (host, ro, slave) for host, target, ro, slave in m.mounts}
    assert by_target["/var/run/netns"] == ("/var/run/netns", False, True)
    assert by_target["/lib/modules"] == ("/lib/modules", True, False)
    assert by_target["/var/run/vpcnet"][0] == "/var/run/vpcnet"


def test_mounts_point_node_paths_at_the_lab_nodes_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = LabLayout("unit")
    monkeypatch.setattr(LabLayout, "run_dir", property(lambda self: tmp_path / self.prefix))
    manifest = imageagents.AgentManifest(
        ["vpcnet", "agent"],
        {},
        [],
        [
            ("/var/run/vpcnet", "/var/run/vpcnet", False, False),
            ("/opt/cni/bin", "/host/opt/cni/bin", True, False),
        ],
    )
    mounts = imageagents.container_mounts(manifest, layout, "node2")
    node = tmp_path / "unit" / "nodes" / "node2"
    assert mounts[0] == f"type=bind,src={node},dst=/var/run/vpcnet,options=rbind:rw"
    assert mounts[1] == f"type=bind,src={node}/cni/bin,dst=/host/opt/cni/bin,options=rbind:ro"
    assert mounts[2].endswith("dst=/etc/vpcnet/kubeconfig,options=rbind:ro")
    assert (node / "cni" / "bin").is_dir()


def test_env_layers_manifest_caller_lab_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = imageagents.AgentManifest(
        [], {"WARM_IP_TARGET": "", "VPCNET_MODE": "vpc", "MY_NODE_NAME": ""}, ["MY_NODE_NAME"], []
    )
    monkeypatch.setenv("WARM_IP_TARGET", "3")  # a ConfigMap knob in the caller's environment passes
    monkeypatch.setenv("HOME", "/root")  # the rest of it does not
    lab_env = {
        "AWS_EC2_ENDPOINT": "http://10.0.255.254",
        "VPCNET_AGENT_SOCKET": "/run/vpcnet/x/nodes/node1/agent.sock",  # the container's path wins
        "KUBECONFIG": "/run/vpcnet/x/kubeconfig-node",
        "HOME": "/root",
    }
    env = imageagents.container_env(manifest, lab_env, {"VPCNET_MODE": "calico"}, "node1")
    assert env == {
        "WARM_IP_TARGET": "3",
        "VPCNET_MODE": "calico",
        "MY_NODE_NAME": "node1",
        "AWS_EC2_ENDPOINT": "http://10.0.255.254",
        "KUBECONFIG": imageagents.CONTAINER_KUBECONFIG,
    }


def test_image_name_of_an_archive(tmp_path: Path) -> None:
    index = {"manifests": [{"annotations": {"io.containerd.image.name": "localhost/vpcnet:9"}}]}
    archive = tmp_path / "a.oci.tar"
    with tarfile.open(archive, "w") as tar:
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert containerd.image_name(archive) == "localhost/vpcnet:9"
    (tmp_path / "junk").write_text("not a tar")
    with pytest.raises(containerd.ContainerdError, match="not an OCI image archive"):
        containerd.image_name(tmp_path / "junk")


def test_controllers_manifest_resolves_the_configmap() -> None:
    m = imageagents.load_controllers_manifest()
    assert m.command == ["vpcnet", "kube-controllers"]
    assert m.run_as_user == 65534
    assert m.env["VPCNET_DATASTORE_TYPE"] == "kubernetes"  # the ConfigMap's value; the lab sets etcd
    assert m.pod_name_vars == ["POD_NAME"]


def test_bad_image_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from vpcnet.lab.labctl import LabError, check_image

    with pytest.raises(LabError, match="no such file"):
        check_image(tmp_path / "missing.oci.tar", agents=True)
    (tmp_path / "junk.tar").write_text("junk")
    with pytest.raises(LabError, match="not an OCI image archive"):
        check_image(tmp_path / "junk.tar", agents=True)
    with pytest.raises(LabError, match="--no-agents"):
        check_image(tmp_path / "junk.tar", agents=False)


def test_etcd_client_certificate_is_mounted_as_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `lab up --etcd-tls`, a container gets the client certificate the process agents get, as from a
    Secret volume: copies readable by the container's user, mounted read-only, the variables naming them
    inside the container (the lab's host paths mean nothing there)."""
    layout = LabLayout("unit")
    monkeypatch.setattr(LabLayout, "run_dir", property(lambda self: tmp_path / self.prefix))
    tls = tmp_path / "unit" / "etcd-tls"
    tls.mkdir(parents=True)
    lab_env = {"HOME": "/root"}
    for var, name in zip(imageagents.TLS_VARIABLES, ("ca.pem", "client.pem", "client-key.pem"), strict=True):
        (tls / name).write_text(f"{name} data")
        (tls / name).chmod(0o600)
        lab_env[var] = str(tls / name)
    mounts, env = imageagents.etcd_client_secret(layout, lab_env)
    secret = tmp_path / "unit" / "etcd-client-secret"
    assert mounts == [f"type=bind,src={secret},dst=/etc/vpcnet/etcd-tls,options=rbind:ro"]
    assert env == {
        "VPCNET_DATASTORE_CA_CERT_FILE": "/etc/vpcnet/etcd-tls/ca.pem",
        "VPCNET_DATASTORE_CERT_FILE": "/etc/vpcnet/etcd-tls/client.pem",
        "VPCNET_DATASTORE_KEY_FILE": "/etc/vpcnet/etcd-tls/client-key.pem",
    }
    assert (secret / "client-key.pem").read_text() == "client-key.pem data"
    assert (secret / "client-key.pem").stat().st_mode & 0o777 == 0o644
    assert "etcd-tls" not in str(sorted(secret.iterdir()))  # no CA or server key beside them
    manifest = imageagents.AgentManifest([], {"VPCNET_DATASTORE_CERT_FILE": ""}, [], [])
    assert imageagents.container_env(manifest, lab_env, {}, "node1", env) == env


def test_no_secret_without_etcd_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = LabLayout("unit")
    monkeypatch.setattr(LabLayout, "run_dir", property(lambda self: tmp_path / self.prefix))
    assert imageagents.etcd_client_secret(layout, {"HOME": "/root"}) == ([], {})
    assert not (tmp_path / "unit").exists()
