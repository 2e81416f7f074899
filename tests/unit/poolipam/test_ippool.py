from __future__ import annotations

import pytest

from vpcnet.api import ValidationError, load_documents
from vpcnet.api.ippool import IPAMConfiguration, IPPool


def pool_doc(spec: str) -> str:
    return f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {spec}\n"


def test_defaults_and_round_trip() -> None:
    (pool,) = load_documents(pool_doc("{cidr: 10.244.0.0/16, vxlanMode: CrossSubnet, natOutgoing: true}"))
    assert isinstance(pool, IPPool)
    assert (pool.block_size, pool.ipip_mode, pool.node_selector, pool.disabled) == (
        26,
        "Never",
        "all()",
        False,
    )
    assert (pool.encapsulation, pool.encap_mode) == ("vxlan", "CrossSubnet")
    again = load_documents(
        pool_doc(str(pool.to_dict()["spec"]).replace("True", "true").replace("False", "false"))
    )
    assert again[0] == pool


def test_ipv6_pool_defaults_to_122_blocks() -> None:
    (pool,) = load_documents(pool_doc("{cidr: 'fd00:10:244::/64', vxlanMode: CrossSubnet}"))
    assert isinstance(pool, IPPool)
    assert (str(pool.cidr), pool.block_size, pool.encapsulation) == ("fd00:10:244::/64", 122, "vxlan")
    (small,) = load_documents(pool_doc("{cidr: 'fd00:10:244::/120', blockSize: 124}"))
    assert isinstance(small, IPPool) and small.block_size == 124


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("{}", "spec.cidr: required"),
        ("{cidr: 10.244.0.1/16}", "host bits set"),
        ("{cidr: 'fd00::1/64'}", "host bits set"),
        ("{cidr: 'fe80::/64'}", "link-local range fe80::/10"),
        ("{cidr: 'fd00::/64', blockSize: 26}", "spec.blockSize"),
        ("{cidr: 'fd00::/124'}", "smaller than one block"),
        ("{cidr: 'fd00::/64', ipipMode: Always}", "IP-in-IP is not supported on an IPv6 pool"),
        ("{cidr: 169.254.0.0/24}", "link-local"),
        ("{cidr: 10.0.0.0/28}", "smaller than one block"),
        ("{cidr: 10.0.0.0/16, blockSize: 19}", "spec.blockSize"),
        ("{cidr: 10.0.0.0/16, vxlanMode: Sometimes}", "spec.vxlanMode: must be one of"),
        ("{cidr: 10.0.0.0/16, vxlanMode: Always, ipipMode: Always}", "cannot both be enabled"),
        ("{cidr: 10.0.0.0/16, nodeSelector: 'a =='}", "spec.nodeSelector"),
        ("{cidr: 10.0.0.0/16, allowedUses: [Workload]}", "spec.allowedUses: unknown field"),
    ],
)
def test_bad_pools_name_the_field(spec: str, fault: str) -> None:
    with pytest.raises(ValidationError, match=fault):
        load_documents(pool_doc(spec))


def test_ipam_configuration() -> None:
    doc = "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {%s}\n"
    (config,) = load_documents(doc % "strictAffinity: true, maxBlocksPerHost: 2")
    assert (
        isinstance(config, IPAMConfiguration) and config.strict_affinity and config.max_blocks_per_host == 2
    )
    with pytest.raises(ValidationError, match="needs strictAffinity"):
        load_documents(doc % "maxBlocksPerHost: 2")


def named_pool(name: str, cidr: str, block_size: int = 26) -> IPPool:
    (pool,) = load_documents(
        f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\n"
        f"spec: {{cidr: {cidr}, blockSize: {block_size}}}\n"
    )
    assert isinstance(pool, IPPool)
    return pool


def test_a_stored_pool_keeps_cidr_and_block_size_and_pools_never_overlap() -> None:
    from vpcnet.api.ippool import pool_update_faults

    stored = [named_pool("a", "10.244.0.0/16"), named_pool("b", "10.245.0.0/16")]
    assert pool_update_faults([named_pool("a", "10.244.0.0/16")], stored) == []
    assert pool_update_faults([named_pool("c", "10.246.0.0/16")], stored) == []
    assert pool_update_faults([named_pool("a", "10.244.0.0/16", 24)], stored) == [
        "IPPool a: spec.blockSize: cannot change (26 -> 24); make a new pool"
    ]
    assert pool_update_faults([named_pool("a", "10.247.0.0/16")], stored) == [
        "IPPool a: spec.cidr: cannot change (10.244.0.0/16 -> 10.247.0.0/16); make a new pool"
    ]
    assert pool_update_faults([named_pool("c", "10.244.128.0/17")], stored) == [
        "IPPool c: spec.cidr: 10.244.128.0/17 overlaps IPPool a (10.244.0.0/16)"
    ]
    # Two new pools of one apply overlap each other; a stored overlap that is not touched is not reported.
    batch = [named_pool("x", "10.9.0.0/16"), named_pool("y", "10.9.0.0/24")]
    assert pool_update_faults(batch, []) == [
        "IPPool x: spec.cidr: 10.9.0.0/16 overlaps IPPool y (10.9.0.0/24)"
    ]


def test_apply_refuses_a_pool_change_whole_and_stores_nothing() -> None:
    import asyncio

    from vpcnet.cli.resources import CliError, apply_resources
    from vpcnet.datastore.resources import ResourceRef, StoredResource

    class Store:
        def __init__(self) -> None:
            self.applied: list[object] = []
            pool = named_pool("default", "10.244.0.0/16").to_dict()
            self.pools = [StoredResource(ResourceRef("ippool.projectcalico.org", None, "default"), pool, 2)]

        async def list(self, kind: str) -> tuple[list[StoredResource], int]:
            return (self.pools if kind == "ippool.projectcalico.org" else []), 5

        async def apply(self, docs: list[object]) -> object:
            self.applied += docs
            return object()

    store = Store()
    changed = [named_pool("default", "10.244.0.0/16", 24), named_pool("other", "10.244.64.0/18")]
    with pytest.raises(CliError) as err:
        asyncio.run(apply_resources(store, changed, []))
    assert "spec.blockSize: cannot change (26 -> 24)" in str(err.value)
    assert "IPPool other: spec.cidr: 10.244.64.0/18 overlaps IPPool default" in str(err.value)
    assert store.applied == []
    asyncio.run(apply_resources(store, [named_pool("new", "10.250.0.0/16")], []))
    assert len(store.applied) == 1
