"""The topology picture: the model from `lab status` and the pods, the dot text (golden), the SVG (parsed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from pictures_data import PODS, STATUS

from vpcnet.cli.topology_picture import to_dot, to_svg, topology

SVG = "{http://www.w3.org/2000/svg}"

GOLDEN_DOT = r"""digraph "vpc t" {
  rankdir=LR;
  node [fontname=Helvetica];
  subgraph "cluster_vpc-1" {
    label="VPC vpc-1 10.0.0.0/16";
    subgraph "cluster_subnet-a" {
      label="subnet subnet-a 10.0.1.0/24 (us-east-1a)";
      "node1" [shape=box3d, label="node1\ni-1 t3.medium\n10.0.1.10"];
    }
    subgraph "cluster_subnet-b" {
      label="subnet subnet-b 10.0.2.0/24 (us-east-1b)";
      "node2" [shape=box3d, label="node2\ni-2 t3.medium\n10.0.2.10"];
    }
  }
  "eni-1" [shape=box, style=rounded, label="eth0 eni-1\n10.0.1.10\n3 secondary, 2 warm"];
  "node1" -> "eni-1";
  "x/a" [shape=ellipse, label="x/a\n10.0.1.12"];
  "eni-1" -> "x/a";
  "eni-2" [shape=box, style=rounded, label="eth0 eni-2\n10.0.2.10"];
  "node2" -> "eni-2";
  "eni-3" [shape=box, style=rounded, label="eth1 eni-3\n10.0.2.20\n1 secondary, 0 warm"];
  "node2" -> "eni-3";
  "x/b" [shape=ellipse, label="x/b\n10.0.2.21"];
  "eni-3" -> "x/b";
  "y/c" [shape=ellipse, label="y/c\n192.168.5.3"];
  "node2" -> "y/c";
}
"""


def test_model_places_pods_on_their_enis_and_counts_the_warm_pool() -> None:
    topo = topology(STATUS, PODS)
    assert [s.id for s in topo.subnets] == ["subnet-a", "subnet-b"]
    node1, node2 = topo.nodes()
    (eni1,) = node1.enis
    assert [p.ref for p in eni1.pods] == ["x/a"]
    assert eni1.warm == ("10.0.1.11", "10.0.1.13")
    assert [p.ref for p in node2.enis[1].pods] == ["x/b"]  # found by address, ENI not yet known
    assert [p.ref for p in node2.other_pods] == ["y/c"]  # a pool address on no ENI
    assert sorted(p.ref for p in topo.pods()) == ["x/a", "x/b", "y/c"]


def test_a_lab_that_is_not_up_has_no_picture() -> None:
    with pytest.raises(ValueError, match="not up"):
        topology({"prefix": "t", "up": False}, [])


def test_dot_is_the_golden_text() -> None:
    assert to_dot(topology(STATUS, PODS)) == GOLDEN_DOT


def test_dot_quotes_what_would_break_it() -> None:
    status = {**STATUS, "vpc": {"id": 'vpc-"q"\\', "cidr": "10.0.0.0/16"}}
    assert 'label="VPC vpc-\\"q\\"\\\\ 10.0.0.0/16";' in to_dot(topology(status, []))


def test_svg_parses_and_holds_every_subnet_node_eni_and_pod() -> None:
    root = ET.fromstring(to_svg(topology(STATUS, PODS)))
    assert root.tag == SVG + "svg"

    def groups(cls: str, attr: str) -> list[str]:
        return [str(g.get(attr)) for g in root.iter(SVG + "g") if g.get("class") == cls]

    assert groups("subnet", "data-id") == ["subnet-a", "subnet-b"]
    assert groups("node", "data-name") == ["node1", "node2"]
    assert groups("eni", "data-id") == ["eni-1", "eni-2", "eni-3"]
    assert sorted(groups("pod", "data-ref")) == ["x/a", "x/b", "y/c"]
    texts = " ".join(t.text or "" for t in root.iter(SVG + "text"))
    assert "warm pool 2:   10.0.1.11 10.0.1.13" in texts and "x/b  10.0.2.21" in texts
    # a pod inside its ENI's group, the pool pod directly in its node's
    eni3 = next(g for g in root.iter(SVG + "g") if g.get("data-id") == "eni-3")
    assert [g.get("data-ref") for g in eni3.iter(SVG + "g") if g.get("class") == "pod"] == ["x/b"]


def test_svg_escapes_names() -> None:
    pods = [*PODS[:1], type(PODS[0])("x/<b&>", "node1", "10.0.1.11", "eni-1")]
    root = ET.fromstring(to_svg(topology(STATUS, pods)))
    refs = [g.get("data-ref") for g in root.iter(SVG + "g") if g.get("class") == "pod"]
    assert "x/<b&>" in refs
