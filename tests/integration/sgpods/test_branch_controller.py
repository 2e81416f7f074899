"""The branch controller against the lab's Kubernetes API (real etcd) and the lab's EC2 engine (in-process,
through the same query client boto3 uses): a selected pod gets a branch ENI with its policy's groups, on its
node's trunk, and the VPC CNI's annotation; an unselected pod gets nothing; a gone pod's branch is deleted;
a trunk full at the type's branch limit leaves the next pod waiting; a restart mid-way reuses the branch;
a gone pod's branch cools down holding its VLAN id, then serves a new pod with its groups or is deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import KubeApi

from vpcnet.api.sgpolicy import POD_ENI_ANNOTATION
from vpcnet.cloud.branch_ec2 import BranchEc2
from vpcnet.controllers.branch_cooldown import RELEASED_TAG, CoolDown
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
        controller = BranchController(store, BranchEc2(ec2), cluster="test", cooldown=CoolDown(0, 0))
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


class Clock:
    """The controller's wall clock, moved by the test (release times are compared with it)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _branches(ec2: SimulatedEc2) -> list[Any]:
    return [e for e in ec2.cloud.enis() if e.interface_type == "branch"]


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [False, True], ids=["delete-each", "reuse-cooled"])
def test_churn_leaves_no_branch_address_or_vlan_behind(kube_api: KubeApi, reuse: bool) -> None:
    """100 pods one after another: each pod's branch is deleted once it is gone (no reuse window), or the
    one cooled branch serves every next pod (one CreateNetworkInterface in all) and is deleted at the end."""
    cycles = 100

    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        await store.apply([_sgp("web", {"app": "web"}, [w["web"]])])
        clock = Clock()
        window = 300.0 if reuse else 0.0
        controller = BranchController(store, BranchEc2(ec2), cooldown=CoolDown(0, window), clock=clock)
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
                return all(b.tags.get(RELEASED_TAG) for b in _branches(ec2)) if reuse else not _branches(ec2)

            await _until(controller, released, f"{name}'s branch was not released")
            clock.now += 1.0
        assert ec2.calls.count("CreateNetworkInterface") == (2 if reuse else cycles + 1)  # with the trunk
        clock.now += window

        async def deleted() -> bool:
            return not _branches(ec2)

        await _until(controller, deleted, "the cooled branch was not deleted")
        trunk = next(e for e in ec2.cloud.enis() if e.interface_type == "trunk")
        assert ec2.cloud.trunk_associations() == [] and trunk.attachment is not None
        assert ec2.cloud.available_ip_count(subnet) == free_before
        assert vlans == {1}  # a freed VLAN id is the next pod's

    _run(body, kube_api)


def test_a_gone_pods_branch_cools_down_holding_its_vlan_then_serves_a_pod_with_its_groups(
    kube_api: KubeApi,
) -> None:
    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        db = ec2.add_security_group("db")
        await store.apply(
            [
                _sgp("web", {"app": "web"}, [w["web"]]),
                _sgp("db", {"app": "db"}, [db]),
                _pod("web-1", {"app": "web"}),
            ]
        )
        clock = Clock()
        controller = BranchController(store, BranchEc2(ec2), cooldown=CoolDown(60, 120), clock=clock)
        await controller.reconcile()
        (first,) = await _annotation(store, "web-1") or []
        await store.delete([ResourceRef("pod", "default", "web-1")])

        async def released() -> bool:
            return bool(ec2.cloud.eni(first["eniId"]).tags.get(RELEASED_TAG))

        await _until(controller, released, "the gone pod's branch was not released")
        # Cooling: still associated under its VLAN id, so a new pod gets another branch and VLAN id.
        assert ec2.cloud.eni(first["eniId"]).trunk_association is not None
        await store.apply([_pod("web-2", {"app": "web"})])
        await _until(controller, lambda: _has_annotation(store, "web-2"), "web-2 got no branch")
        (second,) = await _annotation(store, "web-2") or []
        assert second["eniId"] != first["eniId"] and second["vlanId"] == 2

        # Cooled: a pod with other groups does not take it; one with the same groups does, at no
        # Create/Associate, with its address and VLAN id.
        clock.now += 61
        creates = ec2.calls.count("CreateNetworkInterface")
        associates = ec2.calls.count("AssociateTrunkInterface")
        await store.apply([_pod("db-1", {"app": "db"}), _pod("web-3", {"app": "web"})])
        await _until(controller, lambda: _has_annotation(store, "web-3"), "web-3 got no branch")
        await _until(controller, lambda: _has_annotation(store, "db-1"), "db-1 got no branch")
        (third,) = await _annotation(store, "web-3") or []
        assert third == first
        branch = ec2.cloud.eni(first["eniId"])
        pod = await store.get(ResourceRef("pod", "default", "web-3"))
        assert pod is not None and branch.tags[POD_UID_TAG] == pod.body["metadata"]["uid"]
        assert not branch.tags.get(RELEASED_TAG)
        (dbe,) = await _annotation(store, "db-1") or []
        assert dbe["eniId"] != first["eniId"] and dbe["vlanId"] == 3
        assert ec2.calls.count("CreateNetworkInterface") == creates + 1  # db-1's only
        assert ec2.calls.count("AssociateTrunkInterface") == associates + 1

        # All gone: released, cooled, not reused: deleted, every VLAN id and address back.
        await store.delete([ResourceRef("pod", "default", n) for n in ("web-2", "web-3", "db-1")])

        async def all_released() -> bool:
            return all(b.tags.get(RELEASED_TAG) for b in _branches(ec2))

        await _until(controller, all_released, "branches were not released")
        assert len(_branches(ec2)) == 3
        # A restarted controller keeps the clocks: the release times are the branches' tags.
        controller = BranchController(store, BranchEc2(ec2), cooldown=CoolDown(60, 120), clock=clock)
        assert not (await controller.reconcile()).branches_deleted
        clock.now += 60 + 120

        async def none_left() -> bool:
            return not _branches(ec2)

        await _until(controller, none_left, "cooled branches were not deleted")
        assert ec2.cloud.trunk_associations() == []

    _run(body, kube_api)


async def _has_annotation(store: KubeResourceStore, name: str) -> bool:
    return await _annotation(store, name) is not None


def test_a_full_trunk_waits_for_a_cooling_branch_then_takes_its_vlan(kube_api: KubeApi) -> None:
    """At the branch limit, a cooling branch keeps its VLAN id (the next pod waits, as the resource
    controller counts its delete queue); once cooled, it is deleted for a pod with other groups."""

    async def body(store: KubeResourceStore, ec2: SimulatedEc2, w: dict[str, Any]) -> None:
        limit = 9
        db = ec2.add_security_group("db")
        pods = [_pod(f"web-{i}", {"app": "web"}) for i in range(limit)]
        await store.apply([_sgp("web", {"app": "web"}, [w["web"]]), _sgp("db", {"app": "db"}, [db]), *pods])
        clock = Clock()
        controller = BranchController(store, BranchEc2(ec2), cooldown=CoolDown(60, 600), clock=clock)
        assert len((await controller.reconcile()).branches_created) == limit
        (gone,) = await _annotation(store, "web-4") or []
        await store.delete([ResourceRef("pod", "default", "web-4")])

        async def released() -> bool:
            return bool(ec2.cloud.eni(gone["eniId"]).tags.get(RELEASED_TAG))

        await _until(controller, released, "web-4's branch was not released")
        await store.apply([_pod("db-1", {"app": "db"})])
        deadline = asyncio.get_running_loop().time() + 30
        while "default/db-1" not in (report := await controller.reconcile()).waiting:  # once the cache has it
            assert asyncio.get_running_loop().time() < deadline, report
            await asyncio.sleep(0.02)
        assert "9 branches" in report.waiting["default/db-1"] and not report.branches_created, report
        clock.now += 60
        await _until(controller, lambda: _has_annotation(store, "db-1"), "db-1 got no branch")
        (entry,) = await _annotation(store, "db-1") or []
        assert entry["vlanId"] == gone["vlanId"] and entry["eniId"] != gone["eniId"]
        assert gone["eniId"] not in {e.id for e in ec2.cloud.enis()}

    _run(body, kube_api)
