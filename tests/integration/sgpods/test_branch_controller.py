"""The branch controller against the lab's Kubernetes API (real etcd) and the lab's EC2 engine (in-process,
through the same query client boto3 uses): a selected pod gets a branch ENI with its policy's groups, on its
node's trunk, and the VPC CNI's annotation; an unselected pod gets nothing; a gone pod's branch is deleted;
a trunk full at the type's branch limit leaves the next pod waiting; a restart mid-way reuses the branch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import KubeApi

from vpcnet.api.sgpolicy import POD_ENI_ANNOTATION
from vpcnet.cloud.branch_ec2 import BranchEc2
from vpcnet.controllers.branch_enis import (
    CLUSTER_TAG,
    POD_UID_TAG,
    TRUNK_LABEL,
    BranchController,
)
from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.open import open_kube_store
from vpcnet.datastore.resources import ResourceRef
from vpcnet.lab.labapi import crd_documents
from vpcnet.testing.simulated_ec2 import SimulatedEc2

T = TypeVar("T")


def _run(body: Callable[[KubeResourceStore, SimulatedEc2, dict[str, Any]], Awaitable[T]], api: KubeApi) -> T:
    async def go() -> T:
        store = await open_kube_store(api.kubeconfig)
        try:
            await store.apply(crd_documents())
            ec2 = SimulatedEc2(latency={})
            subnet = ec2.add_subnet("10.0.0.0/20")
            node_group = ec2.add_security_group("nodes")
            inst = ec2.cloud.launch_instance("m5.large", subnet.id, security_group_ids=[node_group])
            await store.apply([_node("node1", inst.id, "m5.large")])
            world = {"subnet": subnet, "instance": inst, "web": ec2.add_security_group("web")}
            return await body(store, ec2, world)
        finally:
            await store.close()

    return asyncio.run(go())


def _node(name: str, instance_id: str, instance_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node.kubernetes.io/instance-type": instance_type, TRUNK_LABEL: "false"},
        },
        "spec": {"providerID": f"aws:///us-east-1a/{instance_id}"},
    }


def _pod(name: str, labels: dict[str, str], node: str = "node1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]},
    }


def _sgp(name: str, selector: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "vpcresources.k8s.aws/v1beta1",
        "kind": "SecurityGroupPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": selector}, "securityGroups": {"groupIds": groups}},
    }


async def _annotation(store: KubeResourceStore, name: str) -> list[dict[str, Any]] | None:
    pod = await store.get(ResourceRef("pod", "default", name))
    assert pod is not None
    raw = (pod.body["metadata"].get("annotations") or {}).get(POD_ENI_ANNOTATION)
    return None if raw is None else list(json.loads(raw))


def test_selected_pod_gets_a_branch_with_its_groups_and_loses_it_with_the_pod(kube_api: KubeApi) -> None:
    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        await store.apply(
            [
                _sgp("web", {"app": "web"}, [w["web"]]),
                _pod("web-1", {"app": "web"}),
                _pod("plain", {"app": "other"}),
            ]
        )
        controller = BranchController(store, BranchEc2(ec2), cluster="test")
        report = await controller.reconcile()
        assert len(report.trunks_created) == 1 and set(report.branches_created) == {"default/web-1"}
        node = await store.get(ResourceRef("node", None, "node1"))
        assert node is not None and node.body["metadata"]["labels"][TRUNK_LABEL] == "true"
        # The node's branch capacity (m5.large: 9) as the resource controller advertises it.
        assert node.body["status"]["allocatable"]["vpc.amazonaws.com/pod-eni"] == "9"
        assert node.body["status"]["capacity"]["vpc.amazonaws.com/pod-eni"] == "9"

        (entry,) = await _annotation(store, "web-1") or []
        branch = ec2.cloud.eni(entry["eniId"])
        assert branch.interface_type == "branch"
        assert list(branch.security_group_ids) == [w["web"]]
        pod = await store.get(ResourceRef("pod", "default", "web-1"))
        assert pod is not None  # the API server gave it its uid
        assert branch.tags[CLUSTER_TAG] == "test" and branch.tags[POD_UID_TAG] == pod.body["metadata"]["uid"]
        assert entry["ifAddress"] == branch.mac and entry["privateIp"] == branch.primary_ip
        assert entry["vlanId"] == 1 and entry["subnetCidr"] == "10.0.0.0/20"
        assoc = branch.trunk_association
        assert assoc is not None and assoc.vlan_id == 1
        assert ec2.cloud.eni(assoc.trunk_eni_id).interface_type == "trunk"
        assert await _annotation(store, "plain") is None

        again = await controller.reconcile()  # a second pass changes nothing
        assert not again.trunks_created and not again.branches_created and not again.branches_deleted

        await store.delete([ResourceRef("pod", "default", "web-1")])
        deleted: list[str] = []
        deadline = asyncio.get_running_loop().time() + 30
        while not deleted:  # the controller reads its watch's cache: the deletion arrives there soon
            assert asyncio.get_running_loop().time() < deadline, "the branch outlived its pod"
            deleted = (await controller.reconcile()).branches_deleted
            await asyncio.sleep(0.05)
        assert deleted == [entry["eniId"]]
        assert not [e for e in ec2.cloud.enis() if e.interface_type == "branch"]

    _run(body, kube_api)


def test_trunk_full_leaves_the_next_pod_waiting(kube_api: KubeApi) -> None:
    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        limit = 9  # m5.large's branch limit in the resource controller's table
        pods = [_pod(f"web-{i}", {"app": "web"}) for i in range(limit + 1)]
        await store.apply([_sgp("web", {"app": "web"}, [w["web"]]), *pods])
        report = await BranchController(store, BranchEc2(ec2)).reconcile()
        assert len(report.branches_created) == limit
        assert len(report.waiting) == 1 and "9 branches" in next(iter(report.waiting.values()))
        vlans = []
        for pod in pods:
            vlans.append((await _annotation(store, pod["metadata"]["name"]) or [{"vlanId": 0}])[0]["vlanId"])
        vlans.sort()
        assert vlans == [0, *range(1, limit + 1)]

    _run(body, kube_api)


def test_a_branch_made_before_a_crash_is_reused(kube_api: KubeApi) -> None:
    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        await store.apply([_sgp("web", {"app": "web"}, [w["web"]]), _pod("web-1", {"app": "web"})])
        controller = BranchController(store, BranchEc2(ec2))
        await controller.reconcile()
        (first,) = await _annotation(store, "web-1") or []

        def strip(b: dict[str, Any]) -> dict[str, Any]:
            del b["metadata"]["annotations"][POD_ENI_ANNOTATION]
            return b

        pod = await store.get(ResourceRef("pod", "default", "web-1"))
        assert pod is not None
        assert await store.replace(strip(dict(pod.body)), pod.revision) is not None
        controller = BranchController(store, BranchEc2(ec2))
        deadline = asyncio.get_running_loop().time() + 30
        while (second_list := await _annotation(store, "web-1")) is None:
            assert asyncio.get_running_loop().time() < deadline, "the pod got no annotation again"
            assert not (await controller.reconcile()).branches_created  # found by its pod-uid tag
            await asyncio.sleep(0.05)
        (second,) = second_list
        assert second == first
        assert len([e for e in ec2.cloud.enis() if e.interface_type == "branch"]) == 1

    _run(body, kube_api)


async def _until(controller: BranchController, done: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not await done():
        assert asyncio.get_running_loop().time() < deadline, what
        await controller.reconcile()
        await asyncio.sleep(0.02)


@pytest.mark.slow
def test_churn_leaves_no_branch_address_or_vlan_behind(kube_api: KubeApi) -> None:
    cycles = 100

    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        await store.apply([_sgp("web", {"app": "web"}, [w["web"]])])
        controller = BranchController(store, BranchEc2(ec2))
        subnet = w["subnet"].id
        free_before = None
        vlans: set[int] = set()
        for i in range(cycles):
            name = f"churn-{i}"
            await store.apply([_pod(name, {"app": "web"})])

            async def annotated(name: str = name) -> bool:
                return await _annotation(store, name) is not None

            await _until(controller, annotated, f"{name} got no branch")
            vlans.add((await _annotation(store, name) or [{}])[0]["vlanId"])
            if free_before is None:  # after the trunk is made: the addresses a branch takes and gives back
                free_before = ec2.cloud.available_ip_count(subnet) + 1
            await store.delete([ResourceRef("pod", "default", name)])

            async def released() -> bool:
                return not [e for e in ec2.cloud.enis() if e.interface_type == "branch"]

            await _until(controller, released, f"{name}'s branch was not deleted")
        trunk = next(e for e in ec2.cloud.enis() if e.interface_type == "trunk")
        assert ec2.cloud.trunk_associations() == [] and trunk.attachment is not None
        assert ec2.cloud.available_ip_count(subnet) == free_before
        assert vlans == {1}  # a freed VLAN id is the next pod's

    _run(body, kube_api)
