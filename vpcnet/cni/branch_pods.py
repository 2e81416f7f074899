"""The CNI commands for a branch-ENI pod (security groups for pods), beside the address manager's path.

ADD asks the lookup (the agent's: the pod in the datastore) whether the pod has a branch: the
`vpc.amazonaws.com/pod-eni` annotation the branch controller writes. With one, the pod is wired onto it
(dataplane/branchnet.py) with the branch's address: the warm pool is not touched. A pod that a
SecurityGroupPolicy selects but that has no annotation yet gets "try again later" (11), as the VPC CNI
does, so the runtime retries once the controller is done; any other pod takes the normal path.

DEL needs the VLAN id to find the pod's table and rules: from what this agent wired, else from prevResult,
where ADD reports it as the VPC CNI does, on a dummy interface whose `mac` is the VLAN id.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from vpcnet.api.sgpolicy import PodEni
from vpcnet.cni.spec import (
    ERR_CHECK_FAILED,
    ERR_TRY_AGAIN_LATER,
    ERR_WIRING_FAILED,
    CniError,
    CniRequest,
    Interface,
    add_result,
    answer,
    prev_result_addresses,
)
from vpcnet.dataplane.branchnet import STRICT, STRICT_VETH_PREFIX, BranchNetwork, BranchSpec, route_table
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.podnet import PodNamespaceGone, PodSpec, WiringError
from vpcnet.ipam.types import IpamKey

log = logging.getLogger("vpcnet.cni.branch")

DUMMY_PREFIX = "dummy"


class BranchPending(Exception):
    """A SecurityGroupPolicy selects the pod, and its branch ENI is not there yet."""


class BranchLookup(Protocol):
    async def pod_eni(self, namespace: str, name: str) -> PodEni | None:
        """The pod's branch; None: the pod takes the normal path. Raises BranchPending, or ValueError for
        an annotation that does not parse."""


def dummy_interface(namespace: str, pod: str, vlan_id: int) -> Interface:
    """The VPC CNI's marker of a branch pod in the result: `dummy<hash>`, its mac field the VLAN id."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[
        :10
    ]  # 15 bytes in all, a kernel name's limit
    return Interface(f"{DUMMY_PREFIX}{digest}", str(vlan_id))


def prev_result_vlan(prev: dict[str, Any] | None) -> int | None:
    for iface in (prev or {}).get("interfaces", []):
        if isinstance(iface, dict) and str(iface.get("name", "")).startswith(DUMMY_PREFIX):
            mac = str(iface.get("mac", ""))
            if mac.isdigit() and 1 <= int(mac) <= 4094:
                return int(mac)
    return None


@dataclass(frozen=True)
class BranchEndpoint:
    spec: BranchSpec
    eni: PodEni


class BranchPods:
    def __init__(
        self, lookup: BranchLookup, network: BranchNetwork, mode: str, veth_prefix: str, mtu: int
    ) -> None:
        self.lookup = lookup
        self.network = network
        self.mode = mode
        self.veth_prefix = veth_prefix
        self.mtu = mtu
        self.endpoints: dict[IpamKey, BranchEndpoint] = {}

    def _veth(self, namespace: str, pod: str) -> str:
        prefix = STRICT_VETH_PREFIX if self.mode == STRICT else self.veth_prefix
        return host_veth_name(prefix, namespace, pod)

    def _spec(
        self, request: CniRequest, address: IPv4Address, vlan_id: int, subnet: IPv4Network
    ) -> BranchSpec:
        env = request.env
        pod = PodSpec(
            netns=env.netns,
            ifname=env.ifname,
            host_veth=self._veth(env.pod_namespace, env.pod_name),
            address=address,
            route_table=route_table(vlan_id),
            mtu=request.conf.mtu or self.mtu,
        )
        return BranchSpec(pod, vlan_id, subnet, self.mode)

    async def add(self, request: CniRequest, key: IpamKey) -> bytes | None:
        """The ADD answer for a branch pod; None when the pod is not one (the caller wires it normally)."""
        env = request.env
        if not env.pod_name:
            return None
        try:
            eni = await self.lookup.pod_eni(env.pod_namespace, env.pod_name)
        except BranchPending as exc:
            raise CniError(ERR_TRY_AGAIN_LATER, "the pod's branch ENI is not ready yet", str(exc)) from None
        except ValueError as exc:
            raise CniError(
                ERR_WIRING_FAILED, "the pod's branch ENI annotation is unusable", str(exc)
            ) from None
        if eni is None:
            return None
        spec = self._spec(request, eni.address, eni.vlan_id, eni.subnet_cidr)
        try:
            wired = await self.network.wire(spec)
        except WiringError as exc:
            if isinstance(exc, PodNamespaceGone):
                raise
            raise CniError(ERR_WIRING_FAILED, "wiring the branch pod failed (undone)", str(exc)) from None
        self.endpoints[key] = BranchEndpoint(spec, eni)
        log.info(
            "pod %s/%s wired on branch %s (VLAN %d)", env.pod_namespace, env.pod_name, eni.eni_id, eni.vlan_id
        )
        result = add_result(
            request.conf.cni_version,
            [
                Interface(wired.host_veth, wired.host_mac),
                Interface(env.ifname, wired.pod_mac, sandbox=env.netns),
                dummy_interface(env.pod_namespace, env.pod_name, eni.vlan_id),
            ],
            eni.address,
            request.conf.prev_result,
        )
        # The pod's interface, not the marker, is the one its address is on.
        for ip in result.get("ips", []):
            ip["interface"] = len(result["interfaces"]) - 2
        return answer(0, result)

    async def delete(self, request: CniRequest, key: IpamKey) -> bool:
        """Unwire a branch pod; False when nothing says the pod was one (the caller's DEL goes on)."""
        known = self.endpoints.pop(key, None)
        if known is not None:
            await self.network.unwire(known.spec, known.spec.pod.host_veth)
            return True
        vlan = prev_result_vlan(request.conf.prev_result)
        if vlan is None:
            return False
        for address in prev_result_addresses(request.conf.prev_result):
            if isinstance(address, IPv4Address):
                spec = self._spec(request, address, vlan, IPv4Network("0.0.0.0/0"))
                await self.network.unwire(spec, spec.pod.host_veth)
        return True

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        """Unwire the branch pods of this network the runtime no longer lists."""
        for key, endpoint in list(self.endpoints.items()):
            if key.network == network and (key.container_id, key.ifname) not in valid:
                log.info("GC unwires branch pod %s", key)
                del self.endpoints[key]
                await self.network.unwire(endpoint.spec, endpoint.spec.pod.host_veth)

    async def check(self, key: IpamKey) -> bool:
        """CHECK of a branch pod this agent wired; False when it is not one."""
        known = self.endpoints.get(key)
        if known is None:
            return False
        problems = await self.network.check(known.spec)
        if problems:
            raise CniError(ERR_CHECK_FAILED, "CHECK: the branch pod's wiring differs", "; ".join(problems))
        return True
