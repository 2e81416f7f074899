from __future__ import annotations

import pytest

from vpcnet.agent.config import load_config
from vpcnet.agent.pool_ipam import default_pool_document
from vpcnet.api import ValidationError


def test_defaults() -> None:
    doc = default_pool_document(load_config({}))
    assert doc["metadata"]["name"] == "default-ipv4-ippool"
    assert doc["spec"] == {
        "cidr": "10.244.0.0/16",
        "blockSize": 26,
        "vxlanMode": "CrossSubnet",
        "ipipMode": "Never",
        "natOutgoing": True,
    }


def test_from_calico_environment() -> None:
    env = {"CALICO_IPV4POOL_CIDR": "172.20.0.0/16", "CALICO_IPV4POOL_BLOCK_SIZE": "28",
           "CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_NAT_OUTGOING": "false"}  # fmt: skip
    spec = default_pool_document(load_config(env))["spec"]
    assert (spec["cidr"], spec["blockSize"], spec["vxlanMode"], spec["natOutgoing"]) == (
        "172.20.0.0/16",
        28,
        "Always",
        False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALICO_IPV4POOL_CIDR": "10.244.0.1/16"}, "spec.cidr"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "x"}, "CALICO_IPV4POOL_BLOCK_SIZE"),
        ({"CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_IPIP": "Always"}, "both be enabled"),
        ({"CALICO_IPV4POOL_NAT_OUTGOING": "maybe"}, "CALICO_IPV4POOL_NAT_OUTGOING"),
    ],
)
def test_bad_environment_names_the_problem(env: dict[str, str], message: str) -> None:
    with pytest.raises((ValueError, ValidationError), match=message):
        default_pool_document(load_config(env))
