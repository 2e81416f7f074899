"""An in-memory EC2 that implements `Ec2Api`, for the warm-pool engine's unit tests and the benchmark.

It enforces what the engine relies on (ENI and address-slot limits per instance type, unique addresses in a
subnet, aligned /28 prefixes, device indexes, no delete while attached, subnet exhaustion) and can add latency
per API (asyncio.sleep, so it follows a virtual clock too) and throttle with a token bucket like EC2.
The lab's EC2 endpoint (vpcnet.lab.ec2) is the real-protocol counterpart; this one exists so the engine
can be tested without HTTP and run against simulated hours of pod churn in seconds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from vpcnet.cloud.ec2 import Attachment, Ec2Error, InstanceTypeInfo, NetworkInterface, Subnet
from vpcnet.cloud.throttle import Backoff, CallObserver, TokenBucket, call_with_retries

# Seconds per API, roughly as EC2 answers (attach is the slow one:
# "up to 10 seconds" for an ENI to be usable).
DEFAULT_LATENCY = {
    "CreateNetworkInterface": 0.6,
    "AttachNetworkInterface": 3.0,
    "AssignPrivateIpAddresses": 0.5,
    "UnassignPrivateIpAddresses": 0.4,
    "DetachNetworkInterface": 1.0,
    "DeleteNetworkInterface": 0.4,
    "DescribeNetworkInterfaces": 0.2,
    "DescribeSubnets": 0.1,
    "DescribeInstanceTypes": 0.1,
    "ModifyNetworkInterfaceAttribute": 0.2,
    "CreateTags": 0.1,
}


@dataclass
class _Eni:
    eni: NetworkInterface
    secondary: list[IPv4Address] = field(default_factory=list)
    prefixes: list[IPv4Network] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    attachment: Attachment | None = None

    def view(self) -> NetworkInterface:
        return replace(
            self.eni,
            secondary_ips=tuple(self.secondary),
            prefixes=tuple(self.prefixes),
            tags=dict(self.tags),
            attachment=self.attachment,
            status="in-use" if self.attachment else "available",
        )

    @property
    def slots(self) -> int:
        return 1 + len(self.secondary) + len(self.prefixes)


@dataclass
class _Instance:
    instance_id: str
    itype: InstanceTypeInfo


class SimulatedEc2:
    def __init__(
        self,
        *,
        latency: Mapping[str, float] | None = None,
        throttle_rate: float | None = None,
        throttle_burst: float = 10.0,
        client_backoff: Backoff | None = None,
        client_rate: float | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        # client_*: behave as EC2 seen through vpcnet's client (its rate limit, retries and backoff)
        self.client_backoff = client_backoff
        self.client_bucket = TokenBucket(client_rate, 2 * client_rate) if client_rate else None
        self.observer = observer
        self.latency = dict(DEFAULT_LATENCY if latency is None else latency)
        self._bucket = TokenBucket(throttle_rate, throttle_burst) if throttle_rate else None
        self.subnets: dict[str, Subnet] = {}
        self.instances: dict[str, _Instance] = {}
        self.enis: dict[str, _Eni] = {}
        self.types: dict[str, InstanceTypeInfo] = {}
        self.used: dict[str, set[IPv4Address]] = {}  # subnet -> addresses in use (prefix members included)
        self.calls: list[str] = []
        self.errors: list[str] = []
        self.fail_next: dict[str, Ec2Error] = {}  # api -> error raised once
        self._ids = itertools.count(1)

    # --- set-up helpers (not EC2 APIs) ---

    def add_instance_type(self, info: InstanceTypeInfo) -> None:
        self.types[info.name] = info

    def add_subnet(self, subnet_id: str, cidr: str, az: str = "us-east-1a", vpc_id: str = "vpc-1") -> Subnet:
        net = IPv4Network(cidr)
        s = Subnet(subnet_id, net, az, vpc_id, net.num_addresses - 5)
        self.subnets[subnet_id] = s
        self.used[subnet_id] = set()
        return s

    def launch(self, instance_id: str, instance_type: str, subnet_id: str) -> NetworkInterface:
        """An instance with its primary ENI (device 0)."""
        self.instances[instance_id] = _Instance(instance_id, self.types[instance_type])
        eni = self._new_eni(subnet_id, "primary", {}, ())
        eni.attachment = Attachment(f"eni-attach-{next(self._ids):08x}", instance_id, 0)
        return eni.view()

    # --- machinery ---

    async def _api(self, api: str) -> None:
        if self.client_backoff is None and self.client_bucket is None:
            await self._attempt(api)
            return
        await call_with_retries(
            api,
            lambda: self._attempt(api),
            bucket=self.client_bucket,
            backoff=self.client_backoff or Backoff(max_attempts=1),
            observer=self.observer,
        )

    async def _attempt(self, api: str) -> None:
        self.calls.append(api)
        if self._bucket is not None:
            self._bucket._refill()
            if self._bucket._tokens < 1:
                self.errors.append("RequestLimitExceeded")
                raise Ec2Error(api, "RequestLimitExceeded", "Request limit exceeded.", 503)
            self._bucket._tokens -= 1
        delay = self.latency.get(api, 0.0)
        if delay:
            await asyncio.sleep(delay)
        err = self.fail_next.pop(api, None)
        if err is not None:
            raise err

    def _free_address(self, subnet_id: str) -> IPv4Address:
        net = self.subnets[subnet_id].cidr
        used = self.used[subnet_id]
        hosts = list(net)
        for a in hosts[4:-1]:  # EC2 reserves the first four and the last
            if a not in used:
                used.add(a)
                return a
        raise Ec2Error(
            "AssignPrivateIpAddresses", "InsufficientFreeAddressesInSubnet", f"{subnet_id} is full"
        )

    def _free_prefix(self, subnet_id: str) -> IPv4Network:
        net = self.subnets[subnet_id].cidr
        used = self.used[subnet_id]
        reserved = set(list(net)[:4]) | {net.broadcast_address}
        for p in net.subnets(new_prefix=28):
            members = set(p)
            if not members & used and not members & reserved:
                used.update(members)
                return p
        raise Ec2Error("AssignPrivateIpAddresses", "InsufficientCidrBlocks", f"{subnet_id} has no free /28")

    def _new_eni(
        self, subnet_id: str, description: str, tags: Mapping[str, str], groups: Sequence[str]
    ) -> _Eni:
        if subnet_id not in self.subnets:
            raise Ec2Error("CreateNetworkInterface", "InvalidSubnetID.NotFound", f"no subnet {subnet_id}")
        n = next(self._ids)
        s = self.subnets[subnet_id]
        eni = NetworkInterface(
            eni_id=f"eni-{n:017x}",
            mac=f"02:00:00:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}",
            subnet_id=subnet_id,
            vpc_id=s.vpc_id,
            availability_zone=s.availability_zone,
            status="available",
            primary_ip=self._free_address(subnet_id),
            description=description,
            security_groups=tuple(groups),
        )
        rec = _Eni(eni, tags=dict(tags))
        self.enis[eni.eni_id] = rec
        return rec

    def _get(self, api: str, eni_id: str) -> _Eni:
        rec = self.enis.get(eni_id)
        if rec is None:
            raise Ec2Error(api, "InvalidNetworkInterfaceID.NotFound", f"no ENI {eni_id}")
        return rec

    def _slot_limit(self, rec: _Eni) -> int:
        if rec.attachment is None:
            return 50  # unattached ENIs are limited by EC2's generic cap, never reached here
        return self.instances[rec.attachment.instance_id].itype.ipv4_per_eni

    def _assign(
        self, api: str, rec: _Eni, count: int, prefix_count: int
    ) -> tuple[list[IPv4Address], list[IPv4Network]]:
        limit = self._slot_limit(rec)
        if rec.slots + count + prefix_count > limit:
            raise Ec2Error(api, "PrivateIpAddressLimitExceeded", f"{rec.eni.eni_id} allows {limit} addresses")
        if prefix_count and rec.attachment is not None:
            itype = self.instances[rec.attachment.instance_id].itype
            if itype.hypervisor != "nitro" and not itype.bare_metal:
                raise Ec2Error(api, "InvalidParameterValue", f"{itype.name} does not support prefixes")
        addrs = [self._free_address(rec.eni.subnet_id) for _ in range(count)]
        prefixes = [self._free_prefix(rec.eni.subnet_id) for _ in range(prefix_count)]
        rec.secondary.extend(addrs)
        rec.prefixes.extend(prefixes)
        return addrs, prefixes

    # --- Ec2Api ---

    async def describe_instance_type(self, instance_type: str) -> InstanceTypeInfo:
        await self._api("DescribeInstanceTypes")
        if instance_type not in self.types:
            raise Ec2Error("DescribeInstanceTypes", "InvalidInstanceType", instance_type)
        return self.types[instance_type]

    async def describe_subnet(self, subnet_id: str) -> Subnet:
        await self._api("DescribeSubnets")
        if subnet_id not in self.subnets:
            raise Ec2Error("DescribeSubnets", "InvalidSubnetID.NotFound", subnet_id)
        s = self.subnets[subnet_id]
        return replace(s, available_ips=s.cidr.num_addresses - 5 - len(self.used[subnet_id]))

    async def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Mapping[str, Sequence[str]] | None = None
    ) -> list[NetworkInterface]:
        await self._api("DescribeNetworkInterfaces")
        out = []
        for rec in self.enis.values():
            v = rec.view()
            if eni_ids and v.eni_id not in eni_ids:
                continue
            if filters and not all(_matches(v, k, vals) for k, vals in filters.items()):
                continue
            out.append(v)
        return out

    async def create_network_interface(
        self,
        *,
        subnet_id: str,
        description: str,
        security_groups: Sequence[str],
        tags: Mapping[str, str],
        secondary_ip_count: int = 0,
        prefix_count: int = 0,
    ) -> NetworkInterface:
        await self._api("CreateNetworkInterface")
        rec = self._new_eni(subnet_id, description, tags, security_groups)
        try:
            self._assign("CreateNetworkInterface", rec, secondary_ip_count, prefix_count)
        except Ec2Error:
            self._release_all(rec)
            del self.enis[rec.eni.eni_id]
            raise
        return rec.view()

    async def attach_network_interface(self, eni_id: str, instance_id: str, device_index: int) -> str:
        api = "AttachNetworkInterface"
        await self._api(api)
        rec = self._get(api, eni_id)
        inst = self.instances.get(instance_id)
        if inst is None:
            raise Ec2Error(api, "InvalidInstanceID.NotFound", instance_id)
        if rec.attachment is not None:
            raise Ec2Error(api, "InvalidParameterValue", f"{eni_id} is already attached")
        mine = [e for e in self.enis.values() if e.attachment and e.attachment.instance_id == instance_id]
        if len(mine) >= inst.itype.max_enis:
            raise Ec2Error(
                api, "AttachmentLimitExceeded", f"{inst.itype.name} allows {inst.itype.max_enis} ENIs"
            )
        if any(e.attachment and e.attachment.device_index == device_index for e in mine):
            raise Ec2Error(api, "InvalidParameterValue", f"device index {device_index} is in use")
        if rec.slots > inst.itype.ipv4_per_eni:
            raise Ec2Error(api, "PrivateIpAddressLimitExceeded", f"{eni_id} has too many addresses")
        rec.attachment = Attachment(f"eni-attach-{next(self._ids):08x}", instance_id, device_index)
        return rec.attachment.attachment_id

    async def set_delete_on_termination(self, eni_id: str, attachment_id: str) -> None:
        await self._api("ModifyNetworkInterfaceAttribute")
        self._get("ModifyNetworkInterfaceAttribute", eni_id)

    async def detach_network_interface(self, attachment_id: str, *, force: bool = False) -> None:
        await self._api("DetachNetworkInterface")
        for rec in self.enis.values():
            if rec.attachment and rec.attachment.attachment_id == attachment_id:
                if rec.attachment.device_index == 0:
                    raise Ec2Error("DetachNetworkInterface", "OperationNotPermitted", "primary ENI")
                rec.attachment = None
                return
        raise Ec2Error("DetachNetworkInterface", "InvalidAttachmentID.NotFound", attachment_id)

    async def delete_network_interface(self, eni_id: str) -> None:
        api = "DeleteNetworkInterface"
        await self._api(api)
        rec = self._get(api, eni_id)
        if rec.attachment is not None:
            raise Ec2Error(api, "InvalidNetworkInterface.InUse", f"{eni_id} is attached")
        self._release_all(rec)
        del self.enis[eni_id]

    def _release_all(self, rec: _Eni) -> None:
        used = self.used[rec.eni.subnet_id]
        used.discard(rec.eni.primary_ip)
        for a in rec.secondary:
            used.discard(a)
        for p in rec.prefixes:
            used.difference_update(set(p))

    async def assign_private_ips(
        self, eni_id: str, *, count: int = 0, prefix_count: int = 0
    ) -> tuple[list[IPv4Address], list[IPv4Network]]:
        api = "AssignPrivateIpAddresses"
        await self._api(api)
        return self._assign(api, self._get(api, eni_id), count, prefix_count)

    async def unassign_private_ips(
        self, eni_id: str, *, addresses: Sequence[IPv4Address] = (), prefixes: Sequence[IPv4Network] = ()
    ) -> None:
        api = "UnassignPrivateIpAddresses"
        await self._api(api)
        rec = self._get(api, eni_id)
        for a in addresses:
            if a == rec.eni.primary_ip:
                raise Ec2Error(api, "InvalidParameterValue", "the primary address cannot be unassigned")
            if a not in rec.secondary:
                raise Ec2Error(api, "InvalidParameterValue", f"{a} is not assigned to {eni_id}")
        for p in prefixes:
            if p not in rec.prefixes:
                raise Ec2Error(api, "InvalidParameterValue", f"{p} is not assigned to {eni_id}")
        used = self.used[rec.eni.subnet_id]
        for a in addresses:
            rec.secondary.remove(a)
            used.discard(a)
        for p in prefixes:
            rec.prefixes.remove(p)
            used.difference_update(set(p))

    async def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        await self._api("CreateTags")
        for r in resource_ids:
            self._get("CreateTags", r).tags.update(tags)


def _matches(eni: NetworkInterface, name: str, values: Sequence[str]) -> bool:
    if name == "attachment.instance-id":
        return eni.attachment is not None and eni.attachment.instance_id in values
    if name == "status":
        return eni.status in values
    if name == "subnet-id":
        return eni.subnet_id in values
    if name == "vpc-id":
        return eni.vpc_id in values
    if name == "network-interface-id":
        return eni.eni_id in values
    if name == "tag-key":
        return any(k in eni.tags for k in values)
    if name.startswith("tag:"):
        return eni.tags.get(name[4:]) in values
    raise ValueError(f"SimulatedEc2 does not know the filter {name}")
