"""Security groups for pods on the node's side: which pods are branch-ENI pods, read from the datastore the
policy component already holds open (the Kubernetes API, or etcd through kube-controllers' mirror).

A pod with the `vpc.amazonaws.com/pod-eni` annotation has its branch. A pod a SecurityGroupPolicy selects
(vpcnet.api.sgpolicy: the same rule the branch controller applies) without it is waiting for the controller
(BranchPending, which the CNI answers with "try again later"). At start the node asks for a trunk ENI with
the label `vpc.amazonaws.com/has-trunk-attached=false`, as the VPC CNI's ipamd does; the controller sets it
to "true" once the trunk is attached.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from vpcnet.api.sgpolicy import POD_ENI_ANNOTATION, PodEni, pod_security_groups, stored_policy
from vpcnet.cni.branch_pods import BranchPending
from vpcnet.datastore.resources import ResourceRef
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError

log = logging.getLogger(__name__)

SGP_KIND = "securitygrouppolicy.vpcresources.k8s.aws"
TRUNK_LABEL = "vpc.amazonaws.com/has-trunk-attached"


class StoreBranchLookup:
    def __init__(self, store: Callable[[], ResourceStoreLike | None], node_name: str) -> None:
        self._store = store
        self.node_name = node_name

    def store(self) -> ResourceStoreLike:
        store = self._store()
        if store is None:
            raise BranchPending("the agent's datastore is not open yet")
        return store

    async def ask_for_trunk(self) -> None:
        """Label the node for the branch controller (unless it already carries the label)."""
        if not self.node_name:
            log.warning("ENABLE_POD_ENI: the node's name is unknown (VPCNET_NODE_NAME): no trunk asked for")
            return
        store = self.store()
        ref = ResourceRef("node", None, self.node_name)
        for _ in range(5):
            node = await store.get(ref)
            if node is None:
                log.warning("ENABLE_POD_ENI: node %s is not in the datastore", self.node_name)
                return
            labels = node.body.get("metadata", {}).get("labels") or {}
            if TRUNK_LABEL in labels:
                return
            body = copy.deepcopy(node.body)
            body.setdefault("metadata", {}).setdefault("labels", {})[TRUNK_LABEL] = "false"
            if await store.replace(body, node.revision) is not None:
                log.info("node %s asks for a trunk ENI (%s=false)", self.node_name, TRUNK_LABEL)
                return
        raise DatastoreError(f"node {self.node_name}: kept changing while the agent labelled it")

    async def pod_eni(self, namespace: str, name: str) -> PodEni | None:
        store = self.store()
        pod = await store.get(ResourceRef("pod", namespace, name))
        if pod is None:
            return None
        meta, spec = pod.body.get("metadata", {}), pod.body.get("spec", {})
        raw = (meta.get("annotations") or {}).get(POD_ENI_ANNOTATION)
        if raw is not None:
            return PodEni.parse(str(raw))
        policies, _ = await store.list(SGP_KIND, namespace)
        parsed = []
        for item in policies:
            try:
                parsed.append(stored_policy(item.body, str(item.ref)))
            except ValueError:
                continue  # the controller ignores it too (and says why)
        if not parsed:
            return None
        account_labels: dict[str, str] = {}
        if any(p.service_account_selector is not None for p in parsed):
            account = await store.get(
                ResourceRef("serviceaccount", namespace, spec.get("serviceAccountName") or "default")
            )
            account_labels = dict((account.body.get("metadata", {}).get("labels") or {}) if account else {})
        groups = pod_security_groups(parsed, namespace, meta.get("labels") or {}, account_labels)
        if groups:
            raise BranchPending(
                f"pod {namespace}/{name} is selected for groups {','.join(groups)}; no branch ENI yet"
            )
        return None
