"""Patches as kubectl 1.20 and 1.32 send them (client-side apply, cordon, the event recorder), applied right.

Each case carries its expected result, written out here; when a kubectl binary is on the machine the same
cases also run through `kubectl patch --local --type strategic` (upstream's merge code) to cross-check.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from vpcnet.lab.kubeapi.patch import apply_strategic_merge_patch

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class Case(NamedTuple):
    kind: str
    live: dict[str, Any]
    patch: dict[str, Any]
    expected: dict[str, Any]


def live_pod() -> dict[str, Any]:
    """A Pod as the server stores it after `kubectl apply`: defaults, status and an injected sidecar."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "0f6e5c1a-0000-4000-8000-000000000001",
            "resourceVersion": "812",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {LAST_APPLIED: '{"old":true}\n', "injector/status": "injected"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.24",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "B", "value": "2"},
                        {"name": "INJECTED", "value": "x"},
                    ],
                    "terminationMessagePath": "/dev/termination-log",
                },
                {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "1d"]},
                {"name": "mesh-proxy", "image": "proxy:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
            ],
            "nodeName": "node-1",
        },
        "status": {"phase": "Running", "podIP": "10.0.1.17"},
    }


def with_changes(doc: dict[str, Any], change: Any) -> dict[str, Any]:
    result = copy.deepcopy(doc)
    change(result)
    return result


def apply_image_and_label_removal() -> Case:
    """kubectl 1.20 apply: new last-applied, the tier label dropped from the manifest, app's image bumped."""
    live = live_pod()
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: '{"new":true}\n'}, "labels": {"tier": None}},
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.25", "name": "app"}],
        },
    }

    def change(pod: dict[str, Any]) -> None:
        pod["metadata"]["annotations"][LAST_APPLIED] = '{"new":true}\n'
        del pod["metadata"]["labels"]["tier"]
        pod["spec"]["containers"][0]["image"] = "nginx:1.25"

    return Case("v1/Pod", live, patch, with_changes(live, change))


def apply_env_change() -> Case:
    """kubectl 1.32 apply: env B removed from the manifest, C added; the injected variable stays."""
    live = live_pod()
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: '{"env":"C"}\n'}},
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                    "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                    "name": "app",
                }
            ],
        },
    }

    def change(pod: dict[str, Any]) -> None:
        pod["metadata"]["annotations"][LAST_APPLIED] = '{"env":"C"}\n'
        # INJECTED keeps its stored place ahead of the new C: upstream reads the stored order after the
        # deletion of B shifted INJECTED into B's slot
        pod["spec"]["containers"][0]["env"] = [
            {"name": "A", "value": "1"},
            {"name": "INJECTED", "value": "x"},
            {"name": "C", "value": "3"},
        ]

    return Case("v1/Pod", live, patch, with_changes(live, change))


def apply_port_change() -> Case:
    """kubectl apply: port 80 replaced by a named 8080 (delete directive for the old merge key)."""
    live = live_pod()
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [
                {
                    "$setElementOrder/ports": [{"containerPort": 8080}],
                    "name": "app",
                    "ports": [
                        {"containerPort": 8080, "name": "http"},
                        {"$patch": "delete", "containerPort": 80},
                    ],
                }
            ],
        }
    }

    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "http"}]

    return Case("v1/Pod", live, patch, with_changes(live, change))


def apply_volume_source_switch() -> Case:
    """kubectl apply on a retainKeys list: the volume's source changes from emptyDir to hostPath."""
    live = live_pod()
    patch = {
        "spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [
                {
                    "$retainKeys": ["hostPath", "name"],
                    "emptyDir": None,
                    "hostPath": {"path": "/srv/data", "type": ""},
                    "name": "data",
                }
            ],
        }
    }

    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"] = [{"name": "data", "hostPath": {"path": "/srv/data", "type": ""}}]

    return Case("v1/Pod", live, patch, with_changes(live, change))


def apply_toleration_and_sidecar_args() -> Case:
    """kubectl apply: atomic lists (tolerations, args) arrive whole and replace what is stored."""
    live = live_pod()
    tolerations = [{"effect": "NoSchedule", "key": "dedicated", "operator": "Equal", "value": "web"}]
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"args": ["sleep", "2d"], "name": "sidecar"}],
            "tolerations": tolerations,
        }
    }

    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["tolerations"] = tolerations
        pod["spec"]["containers"][1]["args"] = ["sleep", "2d"]

    return Case("v1/Pod", live, patch, with_changes(live, change))


def apply_network_policy() -> Case:
    """kubectl apply on a NetworkPolicy: every list is atomic, so the changed rules arrive whole."""
    live = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "annotations": {LAST_APPLIED: "{}\n"},
            "generation": 1,
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                }
            ],
        },
    }
    ingress = [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "a"}},
                    "podSelector": {"matchLabels": {"app": "api"}},
                }
            ],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }
    ]
    egress = [
        {
            "ports": [{"port": 53, "protocol": "UDP"}],
            "to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.9.0/24"]}}],
        }
    ]
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: '{"np":2}\n'}},
        "spec": {"egress": egress, "ingress": ingress, "policyTypes": ["Ingress", "Egress"]},
    }

    def change(np: dict[str, Any]) -> None:
        np["metadata"]["annotations"][LAST_APPLIED] = '{"np":2}\n'
        np["spec"].update({"egress": egress, "ingress": ingress, "policyTypes": ["Ingress", "Egress"]})

    return Case("networking.k8s.io/v1/NetworkPolicy", live, patch, with_changes(live, change))


def apply_namespace_labels() -> Case:
    """kubectl apply on a Namespace: a label dropped, one added; the server's own label and finalizer stay."""
    live = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "shop",
            "labels": {"kubernetes.io/metadata.name": "shop", "team": "a", "env": "dev"},
            "annotations": {LAST_APPLIED: "{}\n"},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: '{"ns":1}\n'}, "labels": {"env": "prod", "team": None}}
    }

    def change(ns: dict[str, Any]) -> None:
        ns["metadata"]["annotations"][LAST_APPLIED] = '{"ns":1}\n'
        ns["metadata"]["labels"] = {"kubernetes.io/metadata.name": "shop", "env": "prod"}

    return Case("v1/Namespace", live, patch, with_changes(live, change))


def apply_finalizers() -> Case:
    """kubectl apply on a set list: `a` dropped from the manifest, `c` added, the server's own one kept."""
    live = live_pod()
    live["metadata"]["finalizers"] = ["example.com/a", "example.com/b", "server/protect"]
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
            "$setElementOrder/finalizers": ["example.com/b", "example.com/c"],
            "finalizers": ["example.com/c"],
        }
    }

    def change(pod: dict[str, Any]) -> None:
        # the new item lands before the server-only one, which was stored after b
        pod["metadata"]["finalizers"] = ["example.com/b", "example.com/c", "server/protect"]

    return Case("v1/Pod", live, patch, with_changes(live, change))


def cordon_node() -> Case:
    """kubectl cordon: a two-way strategic patch of spec.unschedulable."""
    live = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
    }
    return Case(
        "v1/Node",
        live,
        {"spec": {"unschedulable": True}},
        with_changes(live, lambda node: node["spec"].update(unschedulable=True)),
    )


def event_recorder_bump() -> Case:
    """client-go's event recorder: a repeated event is patched with the new count, time and message."""
    live = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "count": 1,
        "lastTimestamp": "2026-12-01T10:00:00Z",
    }
    patch = {
        "count": 2,
        "lastTimestamp": "2026-12-01T10:05:00Z",
        "message": "Back-off restarting failed container app",
    }
    return Case("v1/Event", live, patch, {**live, **patch})


def node_status_from_kubelet() -> Case:
    """The kubelet's status patch: conditions by type; addresses by type (so a stale Hostname entry stays)."""
    live = cordon_node().live
    live["status"]["conditions"] = [
        {"type": "MemoryPressure", "status": "False"},
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
    ]
    live["status"]["addresses"].append({"type": "Hostname", "address": "old-name"})
    patch = {
        "status": {
            "$setElementOrder/addresses": [{"type": "InternalIP"}, {"type": "Hostname"}],
            "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
            "addresses": [{"address": "node-1", "type": "Hostname"}],
            "conditions": [{"reason": "KubeletReady", "status": "True", "type": "Ready"}],
        }
    }

    def change(node: dict[str, Any]) -> None:
        node["status"]["conditions"][1] = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
        node["status"]["addresses"][1] = {"type": "Hostname", "address": "node-1"}

    return Case("v1/Node", live, patch, with_changes(live, change))


CASES = {
    "apply-image-and-label-removal": apply_image_and_label_removal(),
    "apply-env-change": apply_env_change(),
    "apply-port-change": apply_port_change(),
    "apply-volume-source-switch": apply_volume_source_switch(),
    "apply-atomic-lists": apply_toleration_and_sidecar_args(),
    "apply-network-policy": apply_network_policy(),
    "apply-namespace-labels": apply_namespace_labels(),
    "apply-finalizers": apply_finalizers(),
    "cordon": cordon_node(),
    "event-recorder": event_recorder_bump(),
    "kubelet-node-status": node_status_from_kubelet(),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kubectl_patch_applies_as_expected(name: str) -> None:
    case = CASES[name]
    before = copy.deepcopy((case.live, case.patch))
    result = apply_strategic_merge_patch(case.live, case.patch, case.kind)
    assert result == case.expected
    assert _same_order(result, case.expected)  # list order matters: env order is semantic
    assert (case.live, case.patch) == before


def _same_order(left: Any, right: Any) -> bool:
    """Lists in the same order (map key order is not significant)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_order(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same_order(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


KUBECTL = shutil.which("kubectl")


def _as_the_server_keeps_it(value: Any) -> Any:
    """kubectl --local prints the raw merged map; the apiserver's typed decode drops nulls and `$` keys."""
    if isinstance(value, dict):
        return {
            k: _as_the_server_keeps_it(v) for k, v in value.items() if v is not None and not k.startswith("$")
        }
    if isinstance(value, list):
        return [_as_the_server_keeps_it(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on this machine to cross-check with")
@pytest.mark.parametrize("name", sorted(CASES))
def test_expected_results_agree_with_kubectl_patch_local(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    manifest = tmp_path / "object.json"
    manifest.write_text(json.dumps(case.live))
    assert KUBECTL is not None
    run = subprocess.run(
        [
            KUBECTL,
            "patch",
            "--local",
            "-f",
            str(manifest),
            "--type",
            "strategic",
            "-p",
            json.dumps(case.patch),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    upstream = _as_the_server_keeps_it(json.loads(run.stdout))
    assert upstream == case.expected
    assert _same_order(upstream, case.expected)
