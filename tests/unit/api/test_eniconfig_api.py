"""ENIConfig: validation naming the field; the order in which a node names its ENIConfig (the VPC CNI's)."""

from __future__ import annotations

import pytest

from vpcnet.api import ENIConfig, ValidationError, load_documents
from vpcnet.api.eniconfig import EniConfigKeys, node_eniconfig_name

GOOD = """
apiVersion: crd.k8s.amazonaws.com/v1alpha1
kind: ENIConfig
metadata: {name: us-east-1a}
spec: {subnet: subnet-0123456789abcdef0, securityGroups: [sg-0aaaaaaa, sg-0bbbbbbb]}
"""


def test_a_valid_eniconfig_round_trips() -> None:
    (r,) = load_documents(GOOD)
    assert isinstance(r, ENIConfig)
    assert (r.name, r.subnet, r.security_groups) == (
        "us-east-1a",
        "subnet-0123456789abcdef0",
        ("sg-0aaaaaaa", "sg-0bbbbbbb"),
    )
    assert load_documents(str(r.to_dict()).replace("'", '"')) == [r]


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ("{}", r"spec.subnet: required"),
        ("{subnet: my-subnet}", r"spec.subnet: must be a subnet id.*my-subnet"),
        (
            "{subnet: subnet-0aaaaaaa, securityGroups: [default]}",
            r"spec.securityGroups\[0\]: must be a security",
        ),
        (
            "{subnet: subnet-0aaaaaaa, securityGroups: [sg-0aaaaaaa, sg-0aaaaaaa]}",
            r"securityGroups\[1\].*twice",
        ),
        ("{subnet: subnet-0aaaaaaa, securityGroups: sg-0aaaaaaa}", r"spec.securityGroups"),
        ("{subnet: subnet-0aaaaaaa, securityGroup: []}", r"spec.securityGroup"),
    ],
)
def test_bad_eniconfigs_are_refused_naming_the_field(spec: str, where: str) -> None:
    doc = (
        f"apiVersion: crd.k8s.amazonaws.com/v1alpha1\nkind: ENIConfig\nmetadata: {{name: x}}\nspec: {spec}\n"
    )
    with pytest.raises(ValidationError, match=where):
        load_documents(doc, "cfg.yaml")


def test_the_node_names_its_eniconfig_in_the_vpc_cnis_order() -> None:
    keys = EniConfigKeys()
    zone = EniConfigKeys(label="topology.kubernetes.io/zone")
    labels = {"topology.kubernetes.io/zone": "us-east-1a", "k8s.amazonaws.com/eniConfig": "by-label"}
    annotations = {"k8s.amazonaws.com/eniConfig": "by-annotation"}
    external = {**labels, "vpc.amazonaws.com/externalEniConfig": "external"}
    assert node_eniconfig_name(external, annotations, keys)[0] == "external"
    assert node_eniconfig_name(labels, annotations, keys) == (
        "by-annotation",
        "annotation k8s.amazonaws.com/eniConfig",
    )
    assert node_eniconfig_name(labels, {}, keys)[0] == "by-label"
    assert node_eniconfig_name(labels, {}, zone) == ("us-east-1a", "label topology.kubernetes.io/zone")
    assert node_eniconfig_name({}, {}, keys)[0] == "default"
