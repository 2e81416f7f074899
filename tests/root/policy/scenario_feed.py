"""Feeding the policy scenarios to calculations on a one-node kernel data plane (test helper).

`Feeder` turns the scenarios' successive whole-cluster snapshots into the calculation's incremental calls
(policies added, replaced, deleted; labels changed), for every plane of the node at once, as the agent
feeds its planes the same events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vpcnet.api.base import Resource, ResourceKey
from vpcnet.api.core import Pod
from vpcnet.dataplane.calc.feed import delete_resource, feed_resource, ref_of
from vpcnet.dataplane.policy_calc import PolicyCalculator


class Feeder:
    def __init__(self, calcs: Sequence[PolicyCalculator]) -> None:
        self.calcs = tuple(calcs)
        self.current: dict[ResourceKey, Resource] = {}

    @property
    def calc(self) -> PolicyCalculator:
        return self.calcs[0]

    def feed(self, resources: tuple[Resource, ...]) -> None:
        wanted = {r.key: self._local(r) for r in resources}
        for calc in self.calcs:
            for key, old in self.current.items():
                if key not in wanted:
                    delete_resource(calc, ref_of(old))
            for key, resource in wanted.items():
                old = self.current.get(key)
                if old != resource:
                    if old is not None and type(old) is not type(resource):
                        # A Calico and a Kubernetes NetworkPolicy share the key.
                        delete_resource(calc, ref_of(old))
                    feed_resource(calc, resource)
        self.current = wanted

    @staticmethod
    def _local(resource: Resource) -> Resource:
        if isinstance(resource, Pod):
            return dataclasses.replace(resource, node_name="n1")
        return resource
