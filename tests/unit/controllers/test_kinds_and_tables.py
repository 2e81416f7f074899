"""The pure parts of the lab's kubectl integration: Calico's v3 <-> CRD mapping, what the mirror stores,
"nothing to write" in an apply over the API, the Lease's take-over rule, and server-side printing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from vpcnet.controllers.lease import LeaderElector, micro_time
from vpcnet.controllers.mirror import MIRRORED, etcd_document
from vpcnet.datastore.kube import _same, contains
from vpcnet.datastore.kube_kinds import kube_kind, user_document
from vpcnet.datastore.resources import ResourceRef, StoredResource
from vpcnet.lab.kubeapi.resources import BUILTIN, crd_types
from vpcnet.lab.kubeapi.tables import human_age, table, wants_table

GNP = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "deny"},
    "spec": {"selector": "all()", "types": ["Ingress"]},
}


def test_calico_v3_documents_are_stored_as_their_crds_and_mirrored_back() -> None:
    kk = kube_kind("globalnetworkpolicy.projectcalico.org")
    stored = kk.to_api(GNP)
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["kind"] == "GlobalNetworkPolicy"
    assert GNP["apiVersion"] == "projectcalico.org/v3"  # the input is not changed
    ipam = kube_kind("ipamconfiguration.projectcalico.org").to_api({**GNP, "kind": "IPAMConfiguration"})
    assert ipam["kind"] == "IPAMConfig"  # the one kind Calico renames
    assert user_document(ipam)["kind"] == "IPAMConfiguration"
    obj = {
        **stored,
        "metadata": {
            "name": "deny",
            "resourceVersion": "7",
            "uid": "u",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
    }
    back = etcd_document(kk.from_api(obj))
    assert back == {**GNP, "metadata": {"name": "deny", "uid": "u"}}
    # Every kind vpcnet's API layer knows is mirrored (the agents read them all from etcd).
    from vpcnet.api import known_kinds
    from vpcnet.datastore.resources import kind_path

    assert {kind_path(a, k) for a, k in known_kinds()} <= set(MIRRORED)


def test_apply_over_the_api_writes_only_what_differs() -> None:
    current = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}, "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Always"}]},
        "status": {"phase": "Running"},
    }
    same = {
        "metadata": {"name": "a", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert contains(current, {"spec": same["spec"]}) and _same(current, same)  # server defaults don't count
    assert not _same(current, {**same, "metadata": {"name": "a", "labels": {}}})  # a label removed
    other = {**same, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    assert not _same(current, other)


class FakeLeases:
    """The compare-and-swap part of a resource store, for one Lease."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    def _stored(self) -> StoredResource:
        assert self.lease is not None
        body = {**self.lease, "metadata": {**self.lease["metadata"]}}
        return StoredResource(
            ResourceRef("lease.coordination.k8s.io", "kube-system", "x"), body, self.version
        )

    async def get(self, ref: ResourceRef) -> StoredResource | None:
        return None if self.lease is None else self._stored()

    async def create(self, body: dict[str, Any]) -> StoredResource | None:
        if self.lease is not None:
            return None
        self.version += 1
        self.lease = body
        return self._stored()

    async def replace(self, body: dict[str, Any], expected_revision: int) -> StoredResource | None:
        if self.lease is None or expected_revision != self.version:
            return None
        self.version += 1
        self.lease = body
        return self._stored()


def test_a_lease_is_held_until_it_expires_then_taken_over() -> None:
    leases = FakeLeases()
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    a = LeaderElector(leases, "a", duration=15, clock=lambda: now[0])  # type: ignore[arg-type]
    b = LeaderElector(leases, "b", duration=15, clock=lambda: now[0])  # type: ignore[arg-type]
    assert asyncio.run(a.try_acquire()) and not asyncio.run(b.try_acquire())
    now[0] += timedelta(seconds=10)
    assert asyncio.run(a.try_acquire())  # renewed
    assert leases.lease is not None and leases.lease["spec"]["renewTime"] == micro_time(now[0])
    now[0] += timedelta(seconds=14)
    assert not asyncio.run(b.try_acquire())
    now[0] += timedelta(seconds=2)  # a stopped renewing 16 s ago
    assert asyncio.run(b.try_acquire())
    assert leases.lease["spec"]["holderIdentity"] == "b" and leases.lease["spec"]["leaseTransitions"] == 1
    asyncio.run(b.release())
    assert asyncio.run(a.try_acquire())  # released: no need to wait it out


def test_tables_for_kubectl() -> None:
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not wants_table("application/json")
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert human_age("2026-01-01T11:59:15Z", now) == "45s"
    assert human_age("2026-01-01T11:57:30Z", now) == "2m30s"
    assert human_age("2026-01-01T09:00:00Z", now) == "3h"
    pods = next(rt for rt in BUILTIN if rt.kind == "Pod")
    pod = {
        "metadata": {"name": "a", "namespace": "x", "creationTimestamp": "2026-01-01T11:59:15Z"},
        "spec": {"nodeName": "node1", "containers": [{"name": "c"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.9",
            "conditions": [{"type": "ContainersReady", "status": "True"}],
        },
    }
    doc = table(pods, [pod], "5")
    names = [c["name"] for c in doc["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    wide = {c["name"]: c["priority"] for c in doc["columnDefinitions"]}
    assert wide["IP"] == 1 and wide["Node"] == 1  # shown by -o wide only
    row = dict(zip(names, doc["rows"][0]["cells"], strict=True))
    assert row["Ready"] == "1/1" and row["IP"] == "10.0.0.9" and row["Node"] == "node1"
    assert doc["rows"][0]["object"]["metadata"]["namespace"] == "x"
    crd = {
        "metadata": {"name": "ippools.crd.projectcalico.org"},
        "spec": {
            "group": "crd.projectcalico.org",
            "scope": "Cluster",
            "names": {"plural": "ippools", "kind": "IPPool"},
            "versions": [
                {
                    "name": "v1",
                    "additionalPrinterColumns": [
                        {"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"}
                    ],
                }
            ],
        },
    }
    (rt,) = crd_types(crd)
    pool = {"metadata": {"name": "p"}, "spec": {"cidr": "10.244.0.0/16"}}
    assert table(rt, [pool], "1")["rows"][0]["cells"] == ["p", "10.244.0.0/16"]
