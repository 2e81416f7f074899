"""The labels selectors see: the one home of the endpoint-label rule (see vpcnet.policy.model).

A pod's endpoint labels are its own labels plus ``pcns.<key>=<value>`` for every label of its namespace,
``projectcalico.org/namespace``, ``projectcalico.org/orchestrator=k8s`` and, when it has one,
``projectcalico.org/serviceaccount``. A namespace that no document defines is implied: its only label is
kubernetes.io/metadata.name. A namespaced network set carries its own labels plus its namespace's
``pcns.`` labels and ``projectcalico.org/namespace``; a global one only its own.

The batch evaluator (ClusterState) and the incremental calculation both call these functions, so the
two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from vpcnet.api.core import NAMESPACE_NAME_LABEL, Pod
from vpcnet.policy.model import NAMESPACE_LABEL, NAMESPACE_LABEL_PREFIX, ORCHESTRATOR_LABEL

SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"


def namespace_labels(name: str, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``pcns.``-prefixed labels a namespace gives its endpoints; labels None: an implied namespace."""
    out = {NAMESPACE_LABEL_PREFIX + k: v for k, v in (labels or {}).items()}
    out.setdefault(NAMESPACE_LABEL_PREFIX + NAMESPACE_NAME_LABEL, name)
    return out


def pod_namespace(pod: Pod) -> str:
    return pod.metadata.namespace or "default"


def endpoint_labels(pod: Pod, ns_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of pod as an endpoint; ns_labels are its namespace's `namespace_labels`."""
    labels = dict(pod.metadata.labels)
    labels.update(ns_labels)
    labels[NAMESPACE_LABEL] = pod_namespace(pod)
    labels[ORCHESTRATOR_LABEL] = "k8s"
    if pod.service_account_name:
        labels[SERVICE_ACCOUNT_LABEL] = pod.service_account_name
    return labels


def network_set_labels(
    own: Mapping[str, str], namespace: str | None, ns_labels: Mapping[str, str] | None
) -> dict[str, str]:
    """The labels of a network set; namespace None for a GlobalNetworkSet (ns_labels then unused)."""
    labels = dict(own)
    if namespace is not None:
        labels.update(ns_labels if ns_labels is not None else namespace_labels(namespace))
        labels[NAMESPACE_LABEL] = namespace
    return labels
