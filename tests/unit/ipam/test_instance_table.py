"""The bundled instance-type table against the published sources it is built from (scripts/data/)."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vpcnet.ipam.limits import all_instance_types, instance_limits
from vpcnet.ipam.maxpods import max_pods

ROOT = Path(__file__).resolve().parents[3]

# eni-max-pods.txt values our calculator does not reproduce, each with the reason.
EXCEPTIONS = {
    # EC2 (the moto dump) lists two network cards of 8 and 7 ENIs; the default-card rule the file's own header
    # states gives 8 x 49 + 2 = 394, but the file has 737 (all 15 ENIs counted, as if on one card).
    "i7ie.48xlarge": 394,
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_instance_types", ROOT / "scripts" / "gen_instance_types.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
ENI_MAX_PODS: dict[str, int] = GEN.read_eni_max_pods(GEN.ENI_MAX_PODS)


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        resources.files("vpcnet.ipam.data").joinpath("instance_types.json").read_text()
    )
    return doc


def test_the_bundled_table_is_what_the_generator_makes_from_scripts_data() -> None:
    table, disagreements = GEN.merge(
        GEN.read_moto(), GEN.read_vpc_cni(), ENI_MAX_PODS, GEN.read_branch_limits()
    )
    doc = _document()
    assert doc["types"] == json.loads(json.dumps(table))
    assert doc["disagreements"] == json.loads(json.dumps(disagreements))


def test_branch_limits_from_the_resource_controller_table() -> None:
    """Spot facts of pkg/aws/vpc/limits.go; a type the transcription does not cover says nothing."""
    for name, branches in (("c5.large", 9), ("c5.xlarge", 18), ("c5.2xlarge", 38), ("m5.metal", 120)):
        limits = instance_limits(name)
        assert (limits.trunking, limits.branch_interfaces) == (True, branches)
    assert (instance_limits("t3.medium").trunking, instance_limits("t3.medium").branch_interfaces) == (
        False,
        0,
    )
    assert (instance_limits("r5.large").trunking, instance_limits("r5.large").branch_interfaces) == (
        False,
        None,
    )


def test_no_type_of_any_source_is_missing() -> None:
    ours = set(all_instance_types())
    for source in (set(ENI_MAX_PODS), set(GEN.read_moto()), set(GEN.read_vpc_cni())):
        assert not sorted(source - ours)
    # the types the issue names, absent from the emulator's data alone
    assert {"p3.16xlarge", "u-6tb1.metal", "p2.xlarge", "dl1.24xlarge"} <= ours


def test_max_pods_equals_eni_max_pods_txt_for_every_type_it_lists() -> None:
    wrong = {}
    for name, expected in ENI_MAX_PODS.items():
        got = max_pods(instance_limits(name), cap=False)  # the file is the uncapped formula
        if got != EXCEPTIONS.get(name, expected):
            wrong[name] = (got, expected)
        capped = max_pods(instance_limits(name))
        assert capped == min(got, 110 if instance_limits(name).vcpus < 31 else 250)
    assert wrong == {}
    assert all(
        ENI_MAX_PODS[n] != v for n, v in EXCEPTIONS.items()
    )  # an exception that stopped differing goes


def test_disagreements_between_the_sources_are_recorded_and_resolved_by_eni_max_pods() -> None:
    doc = _document()
    by_type = {(d["type"], d["field"]): d for d in doc["disagreements"]}
    # the VPC CNI's (older) table says 7 ENIs per card for c6in.32xlarge; EC2 and eni-max-pods say 8
    assert by_type[("c6in.32xlarge", "cards")]["chosen"] == "ec2-moto"
    assert instance_limits("c6in.32xlarge").enis_per_card == (8, 8)
    # where both agree nothing is recorded, and every recorded pair really differs
    assert ("m5.large", "max_enis") not in by_type
    assert all(d["ec2-moto"] != d["vpc-cni"] for d in doc["disagreements"])


def test_each_row_names_its_sources_and_vpc_cni_only_types_are_complete() -> None:
    doc = _document()
    assert doc["types"]["m5.large"]["sources"] == ["ec2-moto"]
    assert doc["types"]["d3.2xlarge"]["sources"] == ["ec2-moto", "vpc-cni"]
    p3 = instance_limits("p3.16xlarge")
    assert doc["types"]["p3.16xlarge"]["sources"] == ["vpc-cni"]
    assert (p3.max_enis, p3.ipv4_per_eni, p3.hypervisor, p3.is_nitro) == (8, 30, "xen", False)
    metal = instance_limits("u-6tb1.metal")
    assert metal.bare_metal and metal.is_nitro and max_pods(metal, cap=False) == 147
    assert doc["types"]["u-6tb1.metal"]["vcpus_estimated"] is True


def test_the_generator_rejects_a_malformed_source_line(tmp_path: Path) -> None:
    bad = tmp_path / "limits.tsv"
    bad.write_text("p3.2xlarge\t4\t15\txen\tmaybe\t0\t4\n")
    with pytest.raises(ValueError, match=r"limits\.tsv:1"):
        GEN.read_vpc_cni(bad)
    bad.write_text("p3.2xlarge fifty-eight\n")
    with pytest.raises(ValueError, match=r"limits\.tsv:1"):
        GEN.read_eni_max_pods(bad)
