"""kubectl drives the lab's API: Debian's (kubernetes-client 1.20, linked into the venv by `make deps`)
and any other on PATH."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import KubeApi

from vpcnet.lab.kubectl import all_kubectls

KUBECTLS = all_kubectls()
if not KUBECTLS:
    pytest.skip("needs kubectl (Debian's kubernetes-client)", allow_module_level=True)

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: node-a
  containers:
  - name: c
    image: busybox
"""

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: eniconfigs.crd.k8s.amazonaws.com
spec:
  group: crd.k8s.amazonaws.com
  scope: Cluster
  names: {plural: eniconfigs, singular: eniconfig, kind: ENIConfig, listKind: ENIConfigList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""

ENICONFIG = """apiVersion: crd.k8s.amazonaws.com/v1alpha1
kind: ENIConfig
metadata:
  name: us-east-1a
spec:
  subnet: subnet-0123
"""


class Kubectl:
    """One kubectl binary pointed at the test's API, with its own discovery cache."""

    def __init__(self, binary: str, api: KubeApi, cache: Path) -> None:
        self.cmd = [binary, "--kubeconfig", str(api.kubeconfig), "--cache-dir", str(cache)]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self.cmd, *args], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout + done.stderr


@pytest.fixture(params=KUBECTLS)
def kubectl(request: pytest.FixtureRequest, kube_api: KubeApi, tmp_path: Path) -> Kubectl:
    return Kubectl(str(request.param), kube_api, tmp_path / "cache")


def test_create_get_list_delete(kubectl: Kubectl) -> None:
    assert "pod/web created" in kubectl("create", "-f", "-", stdin=POD.format(name="web"))
    assert "AlreadyExists" in kubectl("create", "-f", "-", stdin=POD.format(name="web"), check=False)
    out = kubectl("get", "pods", "-o", "wide")
    assert "web" in out.split()
    name = kubectl("get", "pod", "web", "-o", "jsonpath={.metadata.name}/{.spec.nodeName}/{.status.phase}")
    assert name == "web/node-a/Pending"
    listed = kubectl("get", "pods", "--field-selector", "spec.nodeName=node-a", "-l", "app=web", "-o", "name")
    assert listed.split() == ["pod/web"]
    assert "No resources found" in kubectl("get", "pods", "-l", "app=db")
    assert "NotFound" in kubectl("get", "pod", "nope", check=False)
    assert 'pod "web" deleted' in kubectl("delete", "pod", "web")
    assert "NotFound" in kubectl("get", "pod", "web", check=False)


def test_watch_sees_changes(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("create", "-f", "-", stdin=POD.format(name="first"))
    out_path = tmp_path / "watch.out"
    with open(out_path, "w") as out:
        watcher = subprocess.Popen(
            [*kubectl.cmd, "get", "pods", "-w", "-o", "name"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for(lambda: "pod/first" in out_path.read_text(), "the watch to list the first pod")
        kubectl("create", "-f", "-", stdin=POD.format(name="second"))
        _wait_for(lambda: "pod/second" in out_path.read_text(), "the watch to show the second pod")
        kubectl("delete", "pod", "first", "--wait=false")
        _wait_for(lambda: out_path.read_text().count("pod/first") >= 2, "the watch to show the deletion")
    finally:
        watcher.kill()
        watcher.wait(timeout=10)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_crd_then_its_kind(kubectl: Kubectl) -> None:
    out = kubectl("create", "-f", "-", stdin=CRD)
    assert "customresourcedefinition.apiextensions.k8s.io/eniconfigs.crd.k8s.amazonaws.com created" in out
    # As with a real cluster, kubectl maps a kind once the CRD that defines it exists (a second call).
    out = kubectl("create", "-f", "-", stdin=ENICONFIG)
    assert "eniconfig.crd.k8s.amazonaws.com/us-east-1a created" in out
    assert kubectl("get", "eniconfigs", "-o", "name").split() == [
        "eniconfig.crd.k8s.amazonaws.com/us-east-1a"
    ]
    assert kubectl("get", "eniconfig", "us-east-1a", "-o", "jsonpath={.spec.subnet}") == "subnet-0123"
    kubectl("delete", "crd", "eniconfigs.crd.k8s.amazonaws.com")
    gone = kubectl("get", "eniconfigs", check=False)  # kubectl's cached discovery may still map the kind
    assert "NotFound" in gone or "the server doesn't have a resource type" in gone


DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_apply_deploy_installs_every_object(kubectl: Kubectl) -> None:
    """`kubectl apply -k deploy/` (the README's install) against the lab's API: every object is created,
    the CRDs' kinds are then served (a SecurityGroupPolicy applies), and a second apply succeeds."""
    import yaml

    rendered = kubectl("kustomize", str(DEPLOY))
    expected = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d}
    assert ("Deployment", "vpcnet-branch-controller") in expected
    out = kubectl("apply", "-k", str(DEPLOY))
    created = {line.split(" ", 1)[0] for line in out.splitlines() if line.endswith(" created")}
    assert len(created) == len(expected), out
    for kind, name in expected:
        if kind in {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            kubectl("get", kind.lower(), name, "-o", "name")
        else:
            kubectl("get", kind.lower(), name, "-n", "kube-system", "-o", "name")
    sgp = (
        "apiVersion: vpcresources.k8s.aws/v1beta1\nkind: SecurityGroupPolicy\nmetadata: {name: web}\n"
        "spec:\n  podSelector: {matchLabels: {app: web}}\n"
        "  securityGroups: {groupIds: [sg-0123456789abcdef0]}\n"
    )
    assert "securitygrouppolicy.vpcresources.k8s.aws/web created" in kubectl("apply", "-f", "-", stdin=sgp)
    again = kubectl("apply", "-k", str(DEPLOY))
    # (Debian's kubectl 1.20 predates policy/v1, so it patches the PodDisruptionBudget every time.)
    assert all(line.endswith((" unchanged", " configured")) for line in again.splitlines() if line.strip())
    assert "deployment.apps/vpcnet-branch-controller unchanged" in again, again
