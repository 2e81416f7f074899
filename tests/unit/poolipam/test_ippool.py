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


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("{}", "spec.cidr: required"),
        ("{cidr: 10.244.0.1/16}", "host bits set"),
        ("{cidr: 'fd00::/64'}", "IPv6"),
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
