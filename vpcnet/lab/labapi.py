"""The lab's objects in its Kubernetes API, made by `lab up`: the CRDs of deploy/crds (Calico's kinds and
ENIConfig), a Node per lab node (its InternalIP, zone, instance type, Ready), and the kubeconfigs (kubectl's
on the host loopback, the nodes' at the API's VPC address)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.open import open_kube_store
from vpcnet.datastore.resources import ResourceRef, ref_of
from vpcnet.datastore.types import DatastoreError
from vpcnet.lab.kubeapi.discovery import VERSION
from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.layout import LabLayout

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def write_kubeconfigs(layout: LabLayout, host_url: str, vpc_url: str) -> None:
    write_kubeconfig(layout.kubeconfig, host_url, _name(layout))
    write_node_kubeconfig(layout, vpc_url)


def write_node_kubeconfig(layout: LabLayout, vpc_url: str) -> None:
    """The nodes' kubeconfig alone: the API's VPC address is fixed, so it is written before the API is up."""
    write_kubeconfig(layout.node_kubeconfig, vpc_url, _name(layout))


def _name(layout: LabLayout) -> str:
    return f"vpcnet-lab-{layout.prefix}"


def crd_documents(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


def node_object(node: Any, region: str) -> dict[str, Any]:
    """A Node as a cloud kubelet registers it (node: a labctl.NodeInfo)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": node.instance_type,
                "topology.kubernetes.io/zone": node.az,
                "topology.kubernetes.io/region": region,
            },
        },
        "spec": {"providerID": f"aws:///{node.az}/{node.instance_id}"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.primary_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "lab kubelet is posting ready status",
                }
            ],
            "nodeInfo": {
                "kubeletVersion": VERSION["gitVersion"],
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "vpcnet-lab://1",
                "osImage": "vpcnet lab",
                "kernelVersion": "",
                # Identities a real kubelet reads from the machine; the instance id stands for all three.
                "machineID": node.instance_id,
                "systemUUID": node.instance_id,
                "bootID": node.instance_id,
            },
        },
    }


async def _upsert(store: KubeResourceStore, obj: dict[str, Any], status: bool) -> None:
    """Create obj, or bring the stored one to it (its metadata merged over the stored); then its status."""
    ref: ResourceRef = ref_of(obj)
    for _ in range(20):
        current = await store.get(ref)
        if current is None:
            current = await store.create(obj)
            if current is None:
                continue  # made meanwhile: read it
        else:
            body = copy.deepcopy(obj)
            body["metadata"] = {**current.body["metadata"], **body["metadata"]}
            current = await store.replace(body, current.revision)
            if current is None:
                continue
        if not status or current.body.get("status") == obj.get("status"):
            return
        if await store.replace_status({**current.body, "status": obj["status"]}, current.revision):
            return
    raise DatastoreError(f"{ref}: kept changing while the lab wrote it")


async def bootstrap(kubeconfig: Path, nodes: Sequence[Any], region: str) -> None:
    """CRDs and Nodes, created or brought up to date (so `lab up` on a running lab repairs them)."""
    store = await open_kube_store(kubeconfig)
    try:
        await asyncio.gather(*(_upsert(store, doc, status=False) for doc in crd_documents()))
        await asyncio.gather(*(_upsert(store, node_object(n, region), status=True) for n in nodes))
    finally:
        await store.close()
