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

from vpcnet.controllers.apiclient import ApiClient, ApiError
from vpcnet.controllers.kinds import CRD, NODE
from vpcnet.lab.kubeapi.discovery import VERSION
from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.layout import LabLayout

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def write_kubeconfigs(layout: LabLayout, host_url: str, vpc_url: str) -> None:
    name = f"vpcnet-lab-{layout.prefix}"
    write_kubeconfig(layout.kubeconfig, host_url, name)
    write_kubeconfig(layout.node_kubeconfig, vpc_url, name)


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


async def _upsert(client: ApiClient, kind: Any, obj: dict[str, Any], status: bool) -> None:
    name = obj["metadata"]["name"]
    current = await client.get(kind, None, name)
    if current is None:
        try:
            current = await client.create(kind, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise
            current = await client.get(kind, None, name)
            assert current is not None
    else:
        body = copy.deepcopy(obj)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        body["metadata"] = {**current["metadata"], **body["metadata"]}
        current = await client.replace(kind, body)
    if status and current.get("status") != obj.get("status"):
        current["status"] = obj["status"]
        await client.replace(kind, current, sub="status")


async def bootstrap(server: str, nodes: Sequence[Any], region: str) -> None:
    """CRDs and Nodes, created or brought up to date (so `lab up` on a running lab repairs them)."""
    client = ApiClient(server)
    await asyncio.gather(*(_upsert(client, CRD, doc, status=False) for doc in crd_documents()))
    await asyncio.gather(*(_upsert(client, NODE, node_object(n, region), status=True) for n in nodes))
