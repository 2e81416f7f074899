"""`vpcnet branch-controller`: security groups for pods, the VPC resource controller's job.

For every node that asks for it (the label `vpc.amazonaws.com/has-trunk-attached`, which the agent sets to
"false" with ENABLE_POD_ENI=true, as the VPC CNI's ipamd does) the controller attaches a trunk ENI (the
primary ENI's subnet and groups) and sets the label to "true". For every pod on such a node that a
SecurityGroupPolicy selects (vpcnet.api.sgpolicy) it creates a branch ENI with the selected groups,
associates it with the node's trunk under the lowest free VLAN id (1 up to the instance type's branch
limit) and writes the pod's `vpc.amazonaws.com/pod-eni` annotation, which the CNI waits for. A branch whose
pod is gone (by uid) is released: it keeps its VLAN id through a cool-down, may then serve a new pod on
its trunk that needs exactly its groups, and is disassociated and deleted when nobody took it
(vpcnet.controllers.branch_cooldown); a pod that finds no free VLAN id has a cooled branch deleted for it.

Level-triggered: every pass compares the API (pods, policies, service accounts, nodes) with EC2 (the
branches tagged with this cluster) and repairs the difference, so a controller restarted mid-way finishes
the job (a branch made but not yet written to its pod is found by its pod-uid tag and reused). Passes run on
every change it watches and at least every RESYNC seconds (a pod that found no free VLAN is retried then).
The groups are the ones selected when the branch is made: as on EKS, a policy edited later applies to pods
started after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from vpcnet.api.sgpolicy import (
    POD_ENI_ANNOTATION,
    PodEni,
    SecurityGroupPolicy,
    pod_security_groups,
    stored_policy,
)
from vpcnet.cloud.branch_ec2 import BranchEc2
from vpcnet.cloud.ec2 import Ec2Error, NetworkInterface
from vpcnet.controllers.branch_cooldown import RELEASED_TAG, CoolDown
from vpcnet.datastore.resources import ResourceRef, StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError, WatchCompacted
from vpcnet.ipam.limits import UnknownInstanceType, instance_limits

log = logging.getLogger(__name__)

TRUNK_LABEL = "vpc.amazonaws.com/has-trunk-attached"
POD_ENI_RESOURCE = "vpc.amazonaws.com/pod-eni"  # the extended resource of a node's branch capacity
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
SGP_KIND = "securitygrouppolicy.vpcresources.k8s.aws"
WATCHED = ("pod", "node", "serviceaccount", SGP_KIND)
CLUSTER_TAG = "vpcresources.k8s.aws/cluster-name"
POD_TAG = "vpcresources.k8s.aws/pod"  # "<namespace>/<name>", for people reading EC2
POD_UID_TAG = "vpcnet.io/pod-uid"  # the pod's identity: a pod re-created under one name is another pod
TRUNK_TAG = "vpcresources.k8s.aws/trunk-eni-id"
BRANCH_DESCRIPTION = "aws-k8s-branch-eni"
RESYNC = 30.0
SETTLE = 0.05
WRITE_ATTEMPTS = 5


class BranchCapacity(RuntimeError):
    """A node's trunk has no free VLAN id (its type's branch limit is reached)."""


def instance_id_of(node: Mapping[str, Any]) -> str | None:
    """The instance of a Node from spec.providerID (`aws:///<az>/<instance id>`)."""
    provider = str(node.get("spec", {}).get("providerID", ""))
    tail = provider.rsplit("/", 1)[-1]
    return tail if provider.startswith("aws://") and tail.startswith("i-") else None


def branch_limit(node: Mapping[str, Any]) -> int:
    """Branch ENIs the node's instance type takes (0: not trunking-compatible, or no source says)."""
    labels = node.get("metadata", {}).get("labels", {}) or {}
    try:
        limits = instance_limits(str(labels.get(INSTANCE_TYPE_LABEL, "")))
    except UnknownInstanceType:
        return 0
    return limits.branch_interfaces or 0 if limits.trunking else 0


@dataclass
class PassReport:
    trunks_created: list[str] = field(default_factory=list)
    branches_created: dict[str, str] = field(default_factory=dict)  # pod ref -> branch ENI id
    branches_deleted: list[str] = field(default_factory=list)
    branches_released: list[str] = field(default_factory=list)  # their pods gone: cooling down
    branches_reused: dict[str, str] = field(default_factory=dict)  # pod ref -> the cooled branch it got
    waiting: dict[str, str] = field(default_factory=dict)  # pod ref -> why it has no branch yet
    next_due: float | None = None  # seconds until a released branch cools or expires


@dataclass
class _Trunk:
    node: str
    eni: NetworkInterface
    limit: int
    used_vlans: set[int]


class BranchController:
    def __init__(
        self,
        store: ResourceStoreLike,
        ec2: BranchEc2,
        cluster: str = "vpcnet",
        cooldown: CoolDown | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ec2 = ec2
        self.cluster = cluster
        self.cooldown = cooldown or CoolDown()
        self.clock = clock  # wall clock: release times are tags on the ENIs, read again after a restart
        self._subnets: dict[str, IPv4Network] = {}

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> PassReport:
        report = PassReport()
        items, _ = await self.store.snapshot(WATCHED)
        by_kind: dict[str, list[StoredResource]] = {k: [] for k in WATCHED}
        for item in items:
            if item.invalid is None:
                by_kind[item.ref.kind].append(item)
        policies = _policies(by_kind[SGP_KIND])
        accounts = {
            (s.ref.namespace, s.ref.name): dict(s.body.get("metadata", {}).get("labels") or {})
            for s in by_kind["serviceaccount"]
        }
        trunks = {}
        for node_item in by_kind["node"]:
            trunk = await self._trunk(node_item.body, report)
            if trunk is not None:
                trunks[node_item.ref.name] = trunk
        ours = await self.ec2.branches({CLUSTER_TAG: self.cluster})
        released = [b for b in ours if b.tags.get(RELEASED_TAG)]
        by_uid = {b.tags.get(POD_UID_TAG, ""): b for b in ours if not b.tags.get(RELEASED_TAG)}
        live: set[str] = set()
        for stored in by_kind["pod"]:
            pod = stored.body
            meta, spec = pod.get("metadata", {}), pod.get("spec", {})
            uid, node = str(meta.get("uid") or ""), str(spec.get("nodeName") or "")
            if not uid:
                continue
            live.add(uid)
            if meta.get("deletionTimestamp") or spec.get("hostNetwork") or node not in trunks:
                continue
            if POD_ENI_ANNOTATION in (meta.get("annotations") or {}):
                continue
            namespace = meta.get("namespace") or "default"
            account = accounts.get((namespace, spec.get("serviceAccountName") or "default"), {})
            groups = pod_security_groups(policies, namespace, meta.get("labels") or {}, account)
            if not groups:
                continue
            ref = f"{namespace}/{meta.get('name')}"
            existing = by_uid.get(uid)
            try:
                if existing is None:
                    existing = await self._reuse(stored, trunks[node], groups, released, report)
                branch_id = await self._give_branch(stored, trunks[node], groups, existing, released, report)
            except (BranchCapacity, Ec2Error) as exc:
                report.waiting[ref] = str(exc)
                log.warning("pod %s: no branch ENI yet: %s", ref, exc)
                continue
            if branch_id is not None:
                report.branches_created[ref] = branch_id
                log.info("pod %s: branch ENI %s with %s", ref, branch_id, ",".join(groups))
        now = self.clock()
        for uid, branch in by_uid.items():
            if uid not in live:
                released.append(await self._release(branch, now))
                report.branches_released.append(branch.eni_id)
                log.info(
                    "branch ENI %s released: its pod %s is gone", branch.eni_id, branch.tags.get(POD_TAG)
                )
        for branch in list(released):
            if self.cooldown.expired(branch, now):
                await self._delete_branch(branch)
                released.remove(branch)
                report.branches_deleted.append(branch.eni_id)
                log.info("branch ENI %s deleted: cooled and not reused", branch.eni_id)
        report.next_due = self.cooldown.next_due(released, now)
        return report

    async def _release(self, branch: NetworkInterface, now: float) -> NetworkInterface:
        """Start the branch's cool-down: it keeps its VLAN id and its trunk until it is reused or deleted."""
        tags = {RELEASED_TAG: f"{now:.3f}"}
        await self.ec2.client.create_tags([branch.eni_id], tags)
        return dataclasses.replace(branch, tags={**branch.tags, **tags})

    async def _reuse(
        self,
        pod: StoredResource,
        trunk: _Trunk,
        groups: tuple[str, ...],
        released: list[NetworkInterface],
        report: PassReport,
    ) -> NetworkInterface | None:
        """A cooled branch of the pod's trunk with exactly its groups, made the pod's (one tag write)."""
        branch = self.cooldown.reusable(released, trunk.eni.eni_id, groups, self.clock(), TRUNK_TAG)
        if branch is None:
            return None
        meta = pod.body["metadata"]
        tags = {
            POD_TAG: f"{meta.get('namespace')}/{meta['name']}",
            POD_UID_TAG: str(meta["uid"]),
            RELEASED_TAG: "",
        }
        await self.ec2.client.create_tags([branch.eni_id], tags)
        released.remove(branch)
        report.branches_reused[f"{meta.get('namespace')}/{meta['name']}"] = branch.eni_id
        log.info("pod %s/%s: cooled branch ENI %s reused", meta.get("namespace"), meta["name"], branch.eni_id)
        return dataclasses.replace(branch, tags={**branch.tags, **tags})

    async def _trunk(self, node: dict[str, Any], report: PassReport) -> _Trunk | None:
        meta = node.get("metadata", {})
        labels = meta.get("labels") or {}
        if TRUNK_LABEL not in labels:
            return None
        name, instance = str(meta.get("name")), instance_id_of(node)
        limit = branch_limit(node)
        if instance is None or limit == 0:
            log.warning("node %s asks for a trunk ENI but its instance or type takes none", name)
            return None
        trunk = await self.ec2.trunk_of(instance)
        if trunk is None:
            enis = await self.ec2.instance_enis(instance)
            primary = next(e for e in enis if e.attachment and e.attachment.device_index == 0)
            trunk = await self.ec2.create_trunk(
                instance, primary.subnet_id, primary.security_groups, {CLUSTER_TAG: self.cluster}
            )
            report.trunks_created.append(trunk.eni_id)
            log.info("node %s: trunk ENI %s attached", name, trunk.eni_id)
        if labels.get(TRUNK_LABEL) != "true":
            await self._set_trunk_label(name)
        await self._advertise(name, limit)
        used = {a.vlan_id for a in await self.ec2.associations(trunk.eni_id)}
        return _Trunk(name, trunk, limit, used)

    async def _subnet_cidr(self, subnet_id: str) -> IPv4Network:
        if subnet_id not in self._subnets:
            self._subnets[subnet_id] = (await self.ec2.client.describe_subnet(subnet_id)).cidr
        return self._subnets[subnet_id]

    async def _give_branch(
        self,
        pod: StoredResource,
        trunk: _Trunk,
        groups: tuple[str, ...],
        existing: NetworkInterface | None,
        released: list[NetworkInterface],
        report: PassReport,
    ) -> str | None:
        """Make (or find) the pod's branch, associate it, annotate the pod; the branch id if one was made."""
        meta = pod.body["metadata"]
        made = None
        branch = existing
        vlan = None
        if branch is not None:  # made by an earlier pass that stopped before the annotation
            assocs = [
                a for a in await self.ec2.associations(trunk.eni.eni_id) if a.branch_id == branch.eni_id
            ]
            vlan = assocs[0].vlan_id if assocs else None
        if vlan is None:
            free = [v for v in range(1, trunk.limit + 1) if v not in trunk.used_vlans]
            if not free:
                free = await self._evict(trunk, released, report)
            if not free:
                raise BranchCapacity(
                    f"trunk {trunk.eni.eni_id} of {trunk.node} has all {trunk.limit} branches"
                )
            if branch is None:
                tags = {
                    CLUSTER_TAG: self.cluster,
                    POD_TAG: f"{meta.get('namespace')}/{meta['name']}",
                    POD_UID_TAG: str(meta["uid"]),
                    TRUNK_TAG: trunk.eni.eni_id,
                }
                branch = await self.ec2.create_branch(trunk.eni.subnet_id, groups, tags, BRANCH_DESCRIPTION)
                made = branch.eni_id
            try:
                await self.ec2.associate(branch.eni_id, trunk.eni.eni_id, free[0])
            except Ec2Error:
                await self.ec2.delete_branch(branch.eni_id, None)
                raise
            vlan = free[0]
            trunk.used_vlans.add(vlan)
        assert branch is not None
        annotation = PodEni(
            branch.eni_id, branch.mac, branch.primary_ip, vlan, await self._subnet_cidr(branch.subnet_id)
        ).annotation()

        def annotate(body: dict[str, Any]) -> dict[str, Any] | None:
            if body.get("metadata", {}).get("uid") != meta["uid"]:
                return None  # another pod of that name now: the branch is released as an orphan
            body.setdefault("metadata", {}).setdefault("annotations", {})[POD_ENI_ANNOTATION] = annotation
            return body

        await self._update(pod.ref, annotate)
        return made

    async def _evict(self, trunk: _Trunk, released: list[NetworkInterface], report: PassReport) -> list[int]:
        """Delete a cooled branch of the trunk to free its VLAN id (none if all released ones still cool)."""
        branch = self.cooldown.evictable(released, trunk.eni.eni_id, self.clock(), TRUNK_TAG)
        if branch is None:
            return []
        vlans = [
            a.vlan_id for a in await self.ec2.associations(trunk.eni.eni_id) if a.branch_id == branch.eni_id
        ]
        await self._delete_branch(branch)
        released.remove(branch)
        report.branches_deleted.append(branch.eni_id)
        log.info("branch ENI %s deleted: its VLAN id is wanted on %s", branch.eni_id, trunk.node)
        trunk.used_vlans.difference_update(vlans)
        return sorted(vlans)

    async def _delete_branch(self, branch: NetworkInterface) -> None:
        trunk_id = branch.tags.get(TRUNK_TAG)
        assoc = None
        if trunk_id:
            found = [a for a in await self.ec2.associations(trunk_id) if a.branch_id == branch.eni_id]
            assoc = found[0].association_id if found else None
        await self.ec2.delete_branch(branch.eni_id, assoc)

    async def _set_trunk_label(self, node: str) -> None:
        def label(body: dict[str, Any]) -> dict[str, Any]:
            body.setdefault("metadata", {}).setdefault("labels", {})[TRUNK_LABEL] = "true"
            return body

        await self._update(ResourceRef("node", None, node), label)

    async def _advertise(self, node: str, limit: int) -> None:
        """The node's branch capacity as the extended resource pods of a SecurityGroupPolicy may request
        (`vpc.amazonaws.com/pod-eni`), in its status' capacity and allocatable, as the resource controller
        advertises it (the status subresource: a Kubernetes API store only)."""
        replace_status = getattr(self.store, "replace_status", None)
        if replace_status is None:
            return
        ref = ResourceRef("node", None, node)
        for _ in range(WRITE_ATTEMPTS):
            current = await self.store.get(ref)
            if current is None:
                return
            status = copy.deepcopy(current.body.get("status") or {})
            if all(
                (status.get(k) or {}).get(POD_ENI_RESOURCE) == str(limit) for k in ("capacity", "allocatable")
            ):
                return
            for key in ("capacity", "allocatable"):
                status.setdefault(key, {})[POD_ENI_RESOURCE] = str(limit)
            if await replace_status({**current.body, "status": status}, current.revision) is not None:
                return
        raise DatastoreError(f"node {node}: kept changing while the branch controller wrote its status")

    async def _update(
        self, ref: ResourceRef, mutate: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        """Read, change, write back under compare-and-swap on the read version; again if it moved."""
        for _ in range(WRITE_ATTEMPTS):
            current = await self.store.get(ref)
            if current is None:
                return
            wanted = mutate(copy.deepcopy(current.body))
            if wanted is None or wanted == current.body:
                return
            if await self.store.replace(wanted, current.revision) is not None:
                return
        raise DatastoreError(f"{ref}: kept changing while the branch controller wrote to it")

    # ------------------------------------------------------------------ the loop

    async def run(self, resync: float = RESYNC) -> None:
        changed = asyncio.Event()
        watcher = asyncio.create_task(self._watch(changed))
        wait = resync
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
                await asyncio.sleep(SETTLE)
                changed.clear()
                wait = resync
                try:
                    due = (await self.reconcile()).next_due
                except (DatastoreError, Ec2Error, OSError) as exc:
                    log.warning("branch controller pass failed: %s", exc)
                    continue
                if due is not None:  # wake for the next branch to cool or expire
                    wait = min(resync, due + SETTLE)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, changed: asyncio.Event) -> None:
        delay = 0.2
        while True:
            try:
                _, revision = await self.store.snapshot(WATCHED)
                changed.set()
                async for _event in self.store.watch(WATCHED, revision + 1):
                    changed.set()
            except WatchCompacted:
                continue
            except DatastoreError as exc:
                log.warning("branch controller watch: %s; again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _policies(stored: list[StoredResource]) -> list[SecurityGroupPolicy]:
    out = []
    for item in stored:
        try:
            out.append(stored_policy(item.body, str(item.ref)))
        except ValueError as exc:  # a policy that does not validate selects nothing (and says why)
            log.warning("%s ignored: %s", item.ref, exc)
    return out
