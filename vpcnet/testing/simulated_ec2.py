"""An `Ec2Api` that runs the lab's EC2 engine in-process, for the warm-pool engine's unit tests and the
benchmark.

EC2's rules live once, in the lab's state engine (`vpcnet.lab.ec2.state.Cloud`: ENI and address limits per
instance type from the bundled table, unique addresses in a subnet, aligned /28 prefixes, device indexes,
no delete while attached, subnet exhaustion, EC2's error codes) and its action layer
(`vpcnet.lab.ec2.api`, handlers in `vpcnet.lab.ec2.actions`: parameters, filters, pagination). Requests are
built and answers parsed by `Ec2QueryClient`, the same code the real boto3 client uses; only the transport
differs: a direct call instead of HTTP.

What this module adds is what the lab cannot do for an in-process test on a virtual clock: the lab's fault
injector (`vpcnet.lab.ec2.faults`) sleeps and counts tokens on the wall clock in the HTTP server's
threads, while the engine's tests and the benchmark replay hours in seconds on
`vpcnet.testing.virtual_time`. So latency per API is an `asyncio.sleep`, throttling a token bucket on the
loop's clock, and an injected failure is raised once from `fail_next`. Optionally the client side too
(`client_rate`, `client_backoff`): vpcnet's rate limit and retries, as `Boto3Ec2` applies them.

This is test support (see `vpcnet.testing`): product code in `vpcnet.cloud` sits below the lab and never
imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.cloud.ec2_query import Ec2QueryClient
from vpcnet.cloud.node import NodeInfo
from vpcnet.cloud.throttle import Backoff, CallObserver, TokenBucket, call_with_retries
from vpcnet.lab.ec2 import errors as lab_errors
from vpcnet.lab.ec2.api import Ec2Api as LabEc2Actions
from vpcnet.lab.ec2.model import Instance
from vpcnet.lab.ec2.model import Subnet as LabSubnet
from vpcnet.lab.ec2.state import Cloud

# Seconds per API, roughly as EC2 answers (attach is the slow one: "up to 10 seconds" for an ENI to be
# usable).
DEFAULT_LATENCY = {
    "CreateNetworkInterface": 0.6,
    "AttachNetworkInterface": 3.0,
    "AssignPrivateIpAddresses": 0.5,
    "UnassignPrivateIpAddresses": 0.4,
    "AssignIpv6Addresses": 0.5,
    "UnassignIpv6Addresses": 0.4,
    "DetachNetworkInterface": 1.0,
    "DeleteNetworkInterface": 0.4,
    "DescribeNetworkInterfaces": 0.2,
    "DescribeSubnets": 0.1,
    "DescribeInstanceTypes": 0.1,
    "ModifyNetworkInterfaceAttribute": 0.2,
    "CreateTags": 0.1,
}


class SimulatedEc2(Ec2QueryClient):
    """One VPC of the lab's engine (`cloud`), reached through vpcnet's EC2 client mapping."""

    def __init__(
        self,
        *,
        vpc_cidr: str = "10.0.0.0/16",
        vpc_ipv6_cidr: str | None = None,
        latency: Mapping[str, float] | None = None,
        throttle_rate: float | None = None,
        throttle_burst: float = 10.0,
        client_backoff: Backoff | None = None,
        client_rate: float | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.cloud = Cloud()
        self.vpc_id = self.cloud.create_vpc(vpc_cidr, ipv6_cidr=vpc_ipv6_cidr).id
        self._actions = LabEc2Actions(self.cloud)
        self.latency = dict(DEFAULT_LATENCY if latency is None else latency)
        self._server_bucket = TokenBucket(throttle_rate, throttle_burst) if throttle_rate else None
        # client_*: behave as EC2 seen through vpcnet's client (its rate limit, retries and backoff)
        self.client_backoff = client_backoff
        self.client_bucket = TokenBucket(client_rate, 2 * client_rate) if client_rate else None
        self.observer = observer
        self.calls: list[str] = []  # every attempt, by API name
        self.errors: list[str] = []  # throttling answers given
        self.fail_next: dict[str, Ec2Error] = {}  # api -> error raised once, before the engine sees the call

    # --- set-up (the lab's side of the API, not EC2 calls) ---

    def add_subnet(self, cidr: str, az: str | None = None, ipv6_cidr: str | None = None) -> LabSubnet:
        return self.cloud.create_subnet(self.vpc_id, cidr, az or f"{self.cloud.region}a", ipv6_cidr=ipv6_cidr)

    def add_security_group(self, name: str) -> str:
        return self.cloud.create_security_group(self.vpc_id, name).id

    def launch(self, instance_type: str, subnet_id: str) -> Instance:
        """A running instance with its primary ENI at device 0."""
        return self.cloud.launch_instance(instance_type, subnet_id)

    def node_info(self, instance_id: str) -> NodeInfo:
        """What the agent reads from IMDS on this instance."""
        inst = self.cloud.instance(instance_id)
        primary = self.cloud.eni(inst.primary_eni_id)
        subnet = self.cloud.subnet(inst.subnet_id)
        return NodeInfo(
            instance_id=inst.id,
            instance_type=inst.instance_type,
            availability_zone=inst.az,
            region=self.cloud.region,
            primary_eni_id=primary.id,
            primary_mac=primary.mac,
            primary_ip=IPv4Address(primary.primary_ip),
            subnet_id=subnet.id,
            subnet_cidr=IPv4Network(subnet.cidr),
            vpc_id=inst.vpc_id,
            vpc_cidrs=(IPv4Network(self.cloud.vpc(inst.vpc_id).cidr),),
            security_groups=tuple(primary.security_group_ids),
        )

    # --- transport ---

    async def _call(self, api: str, **params: Any) -> dict[str, Any]:
        if self.client_backoff is None and self.client_bucket is None:
            return await self._attempt(api, params)
        return await call_with_retries(
            api,
            lambda: self._attempt(api, params),
            bucket=self.client_bucket,
            backoff=self.client_backoff or Backoff(max_attempts=1),
            observer=self.observer,
        )

    async def _attempt(self, api: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(api)
        if self._server_bucket is not None and not self._server_bucket.try_take():
            self.errors.append("RequestLimitExceeded")
            raise Ec2Error(api, "RequestLimitExceeded", "Request limit exceeded.", 503)
        delay = self.latency.get(api, 0.0)
        if delay:
            await asyncio.sleep(delay)
        err = self.fail_next.pop(api, None)
        if err is not None:
            raise err
        try:
            answer = self._actions.call(api, dict(params))
        except lab_errors.Ec2Error as exc:
            raise Ec2Error(api, exc.code, exc.message, exc.status) from exc
        return _without_none(answer)


def _without_none(answer: dict[str, Any]) -> dict[str, Any]:
    """As the answer reads after EC2's XML: members without a value are absent, not None."""
    return {k: _value(v) for k, v in answer.items() if v is not None}


def _value(v: Any) -> Any:
    if isinstance(v, dict):
        return _without_none(v)
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v
