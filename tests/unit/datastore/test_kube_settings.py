"""Where the Kubernetes API is, and the kind map (Calico v3 <-> CRD v1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpcnet.datastore.kube_kinds import KINDS, UnknownKind, kube_kind, user_document
from vpcnet.datastore.kube_settings import KubeSettings, KubeSettingsError

IN_POD = {"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_where_the_api_is(tmp_path: Path) -> None:
    config = tmp_path / "kc"
    config.write_text("{}")
    assert KubeSettings.from_env({"KUBECONFIG": f"{config}:/other"}, home=tmp_path).kubeconfig == config
    chosen = KubeSettings.from_env({**IN_POD, "KUBECONFIG": str(config)}, home=tmp_path)
    assert chosen.kubeconfig == config  # KUBECONFIG wins, as for kubectl
    assert KubeSettings.from_env(IN_POD, home=tmp_path).in_cluster
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    settings = KubeSettings.from_env({"VPCNET_KUBE_CONTEXT": "lab"}, home=tmp_path)
    assert settings.kubeconfig == tmp_path / ".kube" / "config" and settings.context == "lab"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"KUBECONFIG": "/nonexistent/kc"},
            "KUBECONFIG='/nonexistent/kc': /nonexistent/kc is not a readable file",
        ),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "KUBERNETES_SERVICE_PORT is not"),
        ({}, "no Kubernetes API configured: set KUBECONFIG"),
    ],
)
def test_missing_api_settings_are_clear_errors(tmp_path: Path, environ: dict[str, str], problem: str) -> None:
    with pytest.raises(KubeSettingsError, match=problem.replace("(", r"\(")):
        KubeSettings.from_env(environ, home=tmp_path)


def test_kind_paths() -> None:
    assert kube_kind("pod").collection_path() == "/api/v1/pods"
    assert kube_kind("pod").object_path("ns", "p") == "/api/v1/namespaces/ns/pods/p"
    assert kube_kind("namespace").object_path(None, "ns") == "/api/v1/namespaces/ns"
    k8s_np = kube_kind("networkpolicy.networking.k8s.io")
    assert k8s_np.collection_path("ns") == "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
    assert kube_kind("globalnetworkpolicy.projectcalico.org").object_path(None, "g") == (
        "/apis/crd.projectcalico.org/v1/globalnetworkpolicies/g"
    )
    assert kube_kind("eniconfig.crd.k8s.amazonaws.com").collection_path() == (
        "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs"
    )
    with pytest.raises(ValueError, match=r"needs metadata\.namespace"):
        kube_kind("pod").object_path(None, "p")
    with pytest.raises(UnknownKind, match="'widget' is not served"):
        kube_kind("widget")
    calico = [k for k in KINDS.values() if k.user_api_version == "projectcalico.org/v3"]
    assert {k.api_version for k in calico} == {"crd.projectcalico.org/v1"} and len(calico) == 10
    assert {"blockaffinities", "ipamblocks", "ipamhandles", "ippools", "tiers"} <= {k.plural for k in calico}


def test_calico_documents_convert_both_ways() -> None:
    ipam = kube_kind("ipamconfiguration.projectcalico.org")
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"}}
    api = ipam.to_api(doc)
    assert (api["apiVersion"], api["kind"]) == ("crd.projectcalico.org/v1", "IPAMConfig")
    assert ipam.from_api(api) == doc and doc["apiVersion"] == "projectcalico.org/v3"  # copies, not edits
    crd_form = {"apiVersion": "crd.projectcalico.org/v1", "kind": "Tier", "metadata": {"name": "t"}}
    assert user_document(crd_form)["apiVersion"] == "projectcalico.org/v3"
    assert user_document({"apiVersion": "v1", "kind": "Pod"}) == {"apiVersion": "v1", "kind": "Pod"}
