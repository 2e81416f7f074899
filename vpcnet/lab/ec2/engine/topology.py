"""The lab-side API of the engine: VPCs (with their default security group), subnets, and instances (a launch
brings its primary ENI, a termination releases its ENIs). EC2 clients never call these; the lab does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import AddressValueError, IPv4Network, IPv6Network, NetmaskValueError

from vpcnet.ipam.limits import UnknownInstanceType, instance_limits
from vpcnet.lab.ec2 import addressing6
from vpcnet.lab.ec2.engine.addresses6 import Ipv6Assignment
from vpcnet.lab.ec2.engine.enis import EniLifecycle
from vpcnet.lab.ec2.engine.security_groups import SecurityGroups
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.engine.tagging import add_tags
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.ids import make_id
from vpcnet.lab.ec2.model import Instance, Subnet, Vpc, timestamp


def _parse_cidr(cidr: str, what: str) -> IPv4Network:
    try:
        return IPv4Network(cidr, strict=True)
    except (AddressValueError, NetmaskValueError, ValueError) as e:
        raise Ec2Error("InvalidParameterValue", f"{what} {cidr!r} is not a valid IPv4 CIDR block: {e}") from e


class Topology:
    def __init__(
        self,
        store: Store,
        groups: SecurityGroups,
        enis: EniLifecycle,
        addresses6: Ipv6Assignment | None = None,
    ) -> None:
        self._store = store
        self._groups = groups
        self._enis = enis
        self._addresses6 = addresses6 or Ipv6Assignment(store)

    def create_vpc(
        self, cidr: str, tags: Mapping[str, str] | None = None, ipv6_cidr: str | None = None
    ) -> Vpc:
        """A VPC; `ipv6_cidr` associates an IPv6 /56 (the lab's stand-in for an Amazon-provided block)."""
        net = _parse_cidr(cidr, "VPC CIDR block")
        if not 16 <= net.prefixlen <= 28:
            raise invalid_value(f"VPC CIDR block {cidr} must be between /16 and /28")
        net6 = (
            addressing6.parse_network(ipv6_cidr, addressing6.VPC_PREFIX_LEN, "VPC IPv6 CIDR block")
            if ipv6_cidr
            else None
        )
        t = self._store.tables
        with self._store.mutation():
            seq = t.next_seq()
            vpc = Vpc(id=make_id("vpc", seq), cidr=str(net), seq=seq, ipv6_cidr=str(net6) if net6 else "")
            add_tags(vpc.tags, tags or {}, vpc.id)
            t.vpcs[vpc.id] = vpc
            self._groups.add(vpc.id, "default", "default VPC security group")
            return vpc

    def create_subnet(
        self,
        vpc_id: str,
        cidr: str,
        az: str,
        tags: Mapping[str, str] | None = None,
        ipv6_cidr: str | None = None,
    ) -> Subnet:
        """A subnet; `ipv6_cidr` (a /64 of the VPC's /56) makes it dual stack."""
        net = _parse_cidr(cidr, "subnet CIDR block")
        net6 = (
            addressing6.parse_network(ipv6_cidr, addressing6.SUBNET_PREFIX_LEN, "subnet IPv6 CIDR block")
            if ipv6_cidr
            else None
        )
        t = self._store.tables
        with self._store.mutation():
            vpc = t.vpc(vpc_id)
            if not net.subnet_of(IPv4Network(vpc.cidr)) or not 16 <= net.prefixlen <= 28:
                raise Ec2Error("InvalidSubnet.Range", f"The CIDR '{cidr}' is invalid for VPC {vpc.cidr}")
            for other in t.subnets.values():
                if other.vpc_id == vpc_id and IPv4Network(other.cidr).overlaps(net):
                    raise Ec2Error("InvalidSubnet.Conflict", f"The CIDR '{cidr}' conflicts with {other.id}")
            if net6 is not None:
                self._check_ipv6_subnet(vpc, net6)
            if not az.startswith(t.region):
                raise invalid_value(f"Availability zone {az!r} is not in region {t.region}")
            seq = t.next_seq()
            subnet = Subnet(
                id=make_id("subnet", seq),
                vpc_id=vpc_id,
                cidr=str(net),
                az=az,
                seq=seq,
                ipv6_cidr=str(net6) if net6 else "",
            )
            add_tags(subnet.tags, tags or {}, subnet.id)
            t.subnets[subnet.id] = subnet
            return subnet

    def launch_instance(
        self,
        instance_type: str,
        subnet_id: str,
        security_group_ids: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        private_ip: str | None = None,
    ) -> Instance:
        """A running instance with its primary ENI attached at device index 0 (DeleteOnTermination)."""
        try:
            instance_limits(instance_type)
        except UnknownInstanceType as e:
            raise Ec2Error(
                "InvalidInstanceType", f"The instance type '{instance_type}' does not exist"
            ) from e
        t = self._store.tables
        with self._store.mutation():
            subnet = t.subnet(subnet_id)
            seq = t.next_seq()
            inst = Instance(
                id=make_id("i", seq),
                instance_type=instance_type,
                subnet_id=subnet_id,
                vpc_id=subnet.vpc_id,
                az=subnet.az,
                launch_time=timestamp(),
                seq=seq,
            )
            add_tags(inst.tags, tags or {}, inst.id)
            t.instances[inst.id] = inst
            eni = self._enis.new_eni(
                subnet,
                description="Primary network interface",
                security_group_ids=security_group_ids,
                private_ip=private_ip,
            )
            self._addresses6.give_launch_address(eni, subnet, instance_type)
            inst.primary_eni_id = eni.id
            self._enis.attach_primary(eni, inst)
            return inst

    def _check_ipv6_subnet(self, vpc: Vpc, net6: IPv6Network) -> None:
        if not vpc.ipv6_cidr:
            raise Ec2Error("InvalidSubnet.Range", f"VPC {vpc.id} has no IPv6 CIDR block for subnet {net6}")
        if not net6.subnet_of(IPv6Network(vpc.ipv6_cidr)):
            raise Ec2Error(
                "InvalidSubnet.Range", f"The IPv6 CIDR '{net6}' is invalid for VPC {vpc.ipv6_cidr}"
            )
        for other in self._store.tables.subnets.values():
            if other.vpc_id == vpc.id and other.ipv6_cidr == str(net6):
                raise Ec2Error("InvalidSubnet.Conflict", f"The IPv6 CIDR '{net6}' conflicts with {other.id}")

    def terminate_instance(self, instance_id: str) -> None:
        """Detach every ENI; delete those with DeleteOnTermination (as EC2 does)."""
        with self._store.mutation():
            inst = self._store.tables.instance(instance_id)
            if inst.state == "terminated":
                return
            self._enis.release_all(instance_id)
            inst.state = "terminated"
