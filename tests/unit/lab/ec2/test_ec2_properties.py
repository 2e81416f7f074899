"""Random sequences of EC2 actions never break the subnet's address invariants, and a refused action
changes nothing."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.ipam.limits import instance_limits
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.state import Cloud

SUBNET = IPv4Network("10.0.0.0/26")  # 59 usable, two /28 blocks free of reserved addresses
OPS = (
    "create",
    "attach",
    "detach",
    "delete",
    "count",
    "prefix",
    "address",
    "explicit_prefix",
    "unassign",
    "sdc",
)

op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(0, 63))


def _check_invariants(cloud: Cloud, subnet_id: str) -> None:
    seen: dict[int, str] = {}
    reserved = {0, 1, 2, 3, 63}
    for eni in cloud.enis():
        owned = [int(IPv4Address(a)) for a in eni.private_ips]
        for p in eni.prefixes:
            block = IPv4Network(p)
            assert block.prefixlen == 28 and block.subnet_of(SUBNET), p
            owned.extend(range(int(block.network_address), int(block.broadcast_address) + 1))
        for addr in owned:
            assert IPv4Address(addr) in SUBNET
            assert addr - int(SUBNET.network_address) not in reserved, (eni.id, IPv4Address(addr))
            assert addr not in seen, f"{IPv4Address(addr)} held by {seen.get(addr)} and {eni.id}"
            seen[addr] = eni.id
        if eni.attachment is not None:
            itype = cloud.instance(eni.attachment.instance_id).instance_type
            assert eni.address_slots <= instance_limits(itype).ipv4_per_eni
    assert cloud.available_ip_count(subnet_id) == 59 - len(seen)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, min_size=1, max_size=40))
def test_random_actions_keep_addresses_unique(ops: list[tuple[str, int, int]]) -> None:
    cloud = Cloud()
    vpc = cloud.create_vpc("10.0.0.0/16")
    subnet = cloud.create_subnet(vpc.id, str(SUBNET), "us-west-2a")
    instances = [cloud.launch_instance(t, subnet.id).id for t in ("t3.medium", "m5.large")]
    for kind, a, b in ops:
        enis = cloud.enis()
        eni = enis[a % len(enis)] if enis else None
        before = cloud.snapshot()
        try:
            if kind == "create":
                explicit = str(SUBNET[b]) if a % 2 else None  # explicit primary plus counted secondaries
                cloud.create_network_interface(subnet.id, private_ip=explicit, secondary_count=a % 4)
            elif eni is None:
                continue
            elif kind == "attach":
                cloud.attach_network_interface(eni.id, instances[b % 2], 1 + a % 3)
            elif kind == "detach" and eni.attachment is not None:
                cloud.detach_network_interface(eni.attachment.id)
            elif kind == "delete":
                cloud.delete_network_interface(eni.id)
            elif kind == "count":
                cloud.assign_private_ip_addresses(eni.id, secondary_count=1 + b % 4)
            elif kind == "prefix":
                cloud.assign_private_ip_addresses(eni.id, prefix_count=1)
            elif kind == "address":
                cloud.assign_private_ip_addresses(eni.id, addresses=[str(SUBNET[b])])
            elif kind == "explicit_prefix":
                cloud.assign_private_ip_addresses(eni.id, prefixes=[f"10.0.0.{(b // 16) * 16}/28"])
            elif kind == "unassign":
                held = eni.secondary_ips[: 1 + b % 3] if eni.secondary_ips else [eni.primary_ip]
                cloud.unassign_private_ip_addresses(eni.id, addresses=held, prefixes=eni.prefixes[:1])
            elif kind == "sdc":
                cloud.modify_network_interface_attribute(eni.id, source_dest_check=bool(b % 2))
        except Ec2Error as e:
            assert e.status < 500, e  # only the rules refuse: no internal error
            assert cloud.snapshot() == before, f"{kind} failed with {e.code} but changed the state"
        _check_invariants(cloud, subnet.id)
