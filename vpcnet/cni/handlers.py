"""The agent's side of the CNI commands: address from the allocator, wiring from the pod data plane.

ADD assigns (idempotent per key), wires, and on any failure undoes the wiring and releases the address.
DEL releases by key and removes the host side by the address the allocator gives back; a key the
allocator no longer knows (agent restarted without it, ADD never finished) falls back on prevResult's
addresses, but only those no key holds (a stale DEL must not cut off a live pod); a missing namespace or
container is not an error: DEL always converges to "nothing left".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from vpcnet.cni.branch_pods import BranchPods
from vpcnet.cni.spec import (
    ERR_CHECK_FAILED,
    ERR_INTERNAL,
    ERR_INVALID_ENV,
    ERR_NO_ADDRESS,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    ERR_WIRING_FAILED,
    LATEST_VERSION,
    CniError,
    CniRequest,
    Interface,
    add_result,
    answer,
    config_version,
    error_answer,
    parse_request,
    prev_result_addresses,
)
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.podnet import (
    HostNetworkNamespace,
    NotANetworkNamespace,
    PodNamespaceGone,
    PodNetwork,
    PodSpec,
    WiringError,
)
from vpcnet.ipam.types import (
    AddressExhausted,
    AddressManagerNotReady,
    AddressWaitTimedOut,
    Allocator,
    Assignment,
    IpamKey,
)

log = logging.getLogger("vpcnet.cni")


@dataclass(frozen=True)
class CniSettings:
    veth_prefix: str = "eni"  # AWS_VPC_K8S_CNI_VETHPREFIX
    mtu: int = 9001  # AWS_VPC_ENI_MTU


@dataclass(frozen=True)
class Endpoint:
    key: IpamKey
    assignment: Assignment
    host_veth: str
    netns: str


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class CniHandler:
    def __init__(
        self,
        allocator: Callable[[], Allocator],
        podnet: PodNetwork,
        settings: CniSettings | None = None,
        policy_problem: Callable[[], str | None] | None = None,
        branches: BranchPods | None = None,
    ) -> None:
        """policy_problem: why the policy data plane is not ready (None: ready, or no policy here);
        branches: branch-ENI pods (security groups for pods), None when the node has none."""
        self._allocator = allocator
        self.branches = branches
        self._policy_problem = policy_problem
        self.podnet = podnet
        self.settings = settings or CniSettings()
        # Pods wired since the agent started (GC and DEL's fallback consult it).
        self.endpoints: dict[IpamKey, Endpoint] = {}
        self._locks: dict[IpamKey, _KeyLock] = {}

    def allocator(self) -> Allocator:
        try:
            return self._allocator()
        except Exception as exc:
            raise CniError(ERR_TRY_AGAIN_LATER, "the address manager is starting", str(exc)) from None

    async def handle(self, data: bytes) -> bytes:
        """One request from the shim to one answer; never raises."""
        version = LATEST_VERSION
        try:
            request = parse_request(data)
            version = request.conf.cni_version
            return await self._dispatch(request)
        except CniError as err:
            return error_answer(err, version if version != LATEST_VERSION else config_version(data))
        except Exception as exc:
            log.exception("CNI request failed")
            return error_answer(CniError(ERR_INTERNAL, "vpcnet agent error", f"{type(exc).__name__}: {exc}"))

    async def _dispatch(self, request: CniRequest) -> bytes:
        command = request.env.command
        if command == "STATUS":
            return await self.status(request)
        if command == "GC":
            await self.gc(request)
            return answer(0, None)
        key = IpamKey(request.conf.name, request.env.container_id, request.env.ifname)
        # One request per key at a time (a runtime retrying an ADD, a DEL racing it); counted so the lock
        # is dropped only when nobody holds or awaits it.
        entry = self._locks.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                if command == "ADD":
                    return await self.add(request, key)
                if command == "DEL":
                    await self.delete(request, key)
                    return answer(0, None)
                await self.check(request, key)
                return answer(0, None)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def _veth(self, request: CniRequest, namespace: str, pod: str) -> str:
        return host_veth_name(request.conf.veth_prefix or self.settings.veth_prefix, namespace, pod)

    async def add(self, request: CniRequest, key: IpamKey) -> bytes:
        env, conf = request.env, request.conf
        # Validate before allocating: a refused ADD must not take an address into its cooldown.
        self._check_netns(env.netns)
        if self.branches is not None:
            try:
                branch_answer = await self.branches.add(request, key)
            except (PodNamespaceGone, NotANetworkNamespace) as exc:
                raise netns_error(exc, env.netns) from None
            if branch_answer is not None:
                return branch_answer
        allocator = self.allocator()
        if not allocator.ready():
            raise CniError(ERR_TRY_AGAIN_LATER, "the address manager is starting (no pool yet)")
        try:
            assignment = await allocator.assign(key, env.pod_namespace, env.pod_name)
        except AddressManagerNotReady as exc:
            raise CniError(ERR_TRY_AGAIN_LATER, "the address manager is starting", str(exc)) from None
        except AddressWaitTimedOut as exc:
            # No limit was hit; EC2 was slow: the spec's "try again later", so the runtime retries the ADD.
            raise CniError(
                ERR_TRY_AGAIN_LATER, "add cmd: timed out waiting for an IP address; try again later", str(exc)
            ) from None
        except AddressExhausted as exc:
            raise CniError(
                ERR_NO_ADDRESS, "add cmd: failed to assign an IP address to container", str(exc)
            ) from None
        spec = PodSpec(
            netns=env.netns,
            ifname=env.ifname,
            host_veth=self._veth(request, assignment.pod_namespace, assignment.pod_name),
            address=assignment.address,
            route_table=assignment.route_table,
            mtu=conf.mtu or self.settings.mtu,
            egress_v4=assignment.egress_v4,
            address6=assignment.address6,
        )
        try:
            wired = await self.podnet.wire(spec)
        except BaseException as exc:
            await self._release_quietly(allocator, key)
            if isinstance(exc, PodNamespaceGone | NotANetworkNamespace):
                raise netns_error(exc, env.netns) from None
            if isinstance(exc, WiringError):
                raise CniError(ERR_WIRING_FAILED, "wiring the pod failed (undone)", str(exc)) from None
            raise
        self.endpoints[key] = Endpoint(key, assignment, spec.host_veth, env.netns)
        result = add_result(
            conf.cni_version,
            [
                Interface(wired.host_veth, wired.host_mac),
                Interface(env.ifname, wired.pod_mac, sandbox=env.netns),
            ],
            assignment.addresses,
            conf.prev_result,
        )
        return answer(0, result)

    def _check_netns(self, netns: str) -> None:
        try:
            self.podnet.check_netns(netns)
        except (PodNamespaceGone, NotANetworkNamespace) as exc:
            raise netns_error(exc, netns) from None

    async def _release_quietly(self, allocator: Allocator, key: IpamKey) -> None:
        try:
            await allocator.release(key)
        except Exception:
            log.exception("releasing %s after a failed ADD failed", key)

    async def delete(self, request: CniRequest, key: IpamKey) -> None:
        if self.branches is not None and await self.branches.delete(request, key):
            return  # a branch pod's address is its branch's: nothing for the address manager
        allocator = self.allocator()
        if not allocator.ready():
            # The address can only be released by the address manager: let the runtime retry.
            raise CniError(ERR_TRY_AGAIN_LATER, "the address manager is starting (DEL will be retried)")
        assignment = await allocator.release(key)
        known = self.endpoints.pop(key, None)
        if assignment is not None:
            veth = self._veth(request, assignment.pod_namespace, assignment.pod_name)
            await self.podnet.unwire(assignment.address, veth, assignment.addresses[1:])
            return
        if known is not None:
            await self.podnet.unwire(
                known.assignment.address, known.host_veth, known.assignment.addresses[1:]
            )
            return
        # Unknown key (nothing in the checkpoint): prevResult is only the runtime's word. Its addresses are
        # cleaned up only when no key holds them; an address the allocator gives to a live pod keeps that
        # pod's route and rules, whatever a stale DEL says.
        env = request.env
        veth = self._veth(request, env.pod_namespace, env.pod_name)
        for address in prev_result_addresses(request.conf.prev_result):
            if await allocator.holds(address):
                log.info("DEL of an unknown container names %s, held by another: left alone", address)
                continue
            await self.podnet.unwire(address, veth)
        # Without an address nothing says the veth of that name is this container's: the runtime's
        # removal of the namespace takes it.

    async def check(self, request: CniRequest, key: IpamKey) -> None:
        if self.branches is not None and await self.branches.check(key):
            return
        assignment = await self.allocator().lookup(key)
        if assignment is None:
            raise CniError(ERR_CHECK_FAILED, "CHECK: the agent holds no address for this container", str(key))
        expected = prev_result_addresses(request.conf.prev_result)
        if expected and any(address not in expected for address in assignment.addresses):
            raise CniError(
                ERR_CHECK_FAILED,
                "CHECK: prevResult's address differs from the assigned one",
                f"{[str(a) for a in expected]} != {[str(a) for a in assignment.addresses]}",
            )
        spec = PodSpec(
            netns=request.env.netns,
            ifname=request.env.ifname,
            host_veth=self._veth(request, assignment.pod_namespace, assignment.pod_name),
            address=assignment.address,
            route_table=assignment.route_table,
            mtu=request.conf.mtu or self.settings.mtu,
            egress_v4=assignment.egress_v4,
            address6=assignment.address6,
        )
        problems = await self.podnet.check(spec)
        if problems:
            raise CniError(
                ERR_CHECK_FAILED, "CHECK: the pod's wiring differs from what ADD made", "; ".join(problems)
            )

    async def status(self, request: CniRequest) -> bytes:
        try:
            ready = self._allocator().ready()
        except Exception:
            ready = False
        if not ready:
            raise CniError(ERR_NOT_AVAILABLE, "the plugin is not available: the address manager is not ready")
        problem = self._policy_problem() if self._policy_problem is not None else None
        if problem is not None:  # pods would start behind the dispatch drop, unreachable
            raise CniError(
                ERR_NOT_AVAILABLE, "the plugin is not available: network policy is not ready", problem
            )
        return answer(0, None)

    async def gc(self, request: CniRequest) -> None:
        """Release every attachment of this network the runtime no longer lists."""
        valid = set(request.conf.valid_attachments or ())
        if self.branches is not None:
            await self.branches.gc(request.conf.name, valid)
        allocator = self.allocator()
        for key, endpoint in list(self.endpoints.items()):
            if key.network != request.conf.name or (key.container_id, key.ifname) in valid:
                continue
            log.info("GC releases %s", key)
            await allocator.release(key)
            del self.endpoints[key]
            await self.podnet.unwire(
                endpoint.assignment.address, endpoint.host_veth, endpoint.assignment.addresses[1:]
            )


def netns_error(exc: WiringError, netns: str) -> CniError:
    """CNI_NETNS names no usable pod namespace: the spec's invalid-environment error (4), saying why."""
    if isinstance(exc, PodNamespaceGone):
        return CniError(ERR_INVALID_ENV, "CNI_NETNS does not exist", netns)
    if isinstance(exc, HostNetworkNamespace):
        return CniError(
            ERR_INVALID_ENV, "CNI_NETNS is the node's own network namespace, not a pod's (refused)", netns
        )
    return CniError(ERR_INVALID_ENV, "CNI_NETNS is not a network namespace", netns)
