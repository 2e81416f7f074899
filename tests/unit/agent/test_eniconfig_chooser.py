"""The agent's choice of ENIConfig from views of its Node and the ENIConfigs (the feed is tested against the
lab API in tests/integration/kubeapi)."""

from __future__ import annotations

from typing import Any

from vpcnet.agent.eniconfig import EniConfigChooser, node_event
from vpcnet.agent.node_events import NodeView
from vpcnet.api.eniconfig import EniConfigKeys
from vpcnet.datastore.resources import ResourceRef, StoredResource
from vpcnet.ipam.eni_target import EniTargets

KIND = "eniconfig.crd.k8s.amazonaws.com"


def eniconfig(name: str, subnet: str, groups: tuple[str, ...] = ()) -> StoredResource:
    body = {
        "apiVersion": "crd.k8s.amazonaws.com/v1alpha1",
        "kind": "ENIConfig",
        "metadata": {"name": name, "resourceVersion": "5"},
        "spec": {"subnet": subnet, "securityGroups": list(groups)},
    }
    return StoredResource(ResourceRef(KIND, None, name), body, 5)


def node(labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "labels": labels, "annotations": annotations or {}}}


def chooser(keys: EniConfigKeys | None = None) -> EniConfigChooser:
    return EniConfigChooser(EniTargets(custom_networking=True), "n1", keys or EniConfigKeys())


def test_the_labelled_eniconfig_becomes_the_target() -> None:
    c = chooser()
    configs = {
        "a": eniconfig("a", "subnet-0aaaaaaa", ("sg-0aaaaaaa",)),
        "b": eniconfig("b", "subnet-0bbbbbbb"),
    }
    c.on_view(NodeView(node({"k8s.amazonaws.com/eniConfig": "a"}), configs))
    d = c.targets.describe()
    assert (d["subnet"], d["securityGroups"], d["problem"]) == ("subnet-0aaaaaaa", ["sg-0aaaaaaa"], "")
    assert c.status()["chosenBy"] == "label k8s.amazonaws.com/eniConfig"
    c.on_view(
        NodeView(node({"k8s.amazonaws.com/eniConfig": "a"}, {"k8s.amazonaws.com/eniConfig": "b"}), configs)
    )
    assert c.targets.describe()["subnet"] == "subnet-0bbbbbbb"  # the annotation comes before the label


def test_a_zone_label_and_the_default() -> None:
    c = chooser(EniConfigKeys(label="topology.kubernetes.io/zone"))
    configs = {
        "us-east-1a": eniconfig("us-east-1a", "subnet-0aaaaaaa"),
        "default": eniconfig("default", "subnet-0ddddddd"),
    }
    c.on_view(NodeView(node({"topology.kubernetes.io/zone": "us-east-1a"}), configs))
    assert c.targets.describe()["subnet"] == "subnet-0aaaaaaa"
    c.on_view(NodeView(node({}), configs))
    assert c.targets.describe()["subnet"] == "subnet-0ddddddd"


def test_missing_invalid_or_no_node_say_why_and_give_no_target() -> None:
    c = chooser()
    c.on_view(NodeView(None, {}))
    assert "Node 'n1' is not in the datastore" in str(c.targets.problem)
    c.on_view(
        NodeView(node({"k8s.amazonaws.com/eniConfig": "nope"}), {"a": eniconfig("a", "subnet-0aaaaaaa")})
    )
    said = "ENIConfig 'nope' (named by the node's label k8s.amazonaws.com/eniConfig)"
    assert c.targets.problem == f"{said} does not exist (ENIConfigs: a)"
    bad = {"nope": eniconfig("nope", "not-a-subnet")}
    c.on_view(NodeView(node({"k8s.amazonaws.com/eniConfig": "nope"}), bad))
    assert "is not usable" in c.targets.problem and "spec.subnet" in c.targets.problem
    assert c.targets.describe()["subnet"] == ""


def test_each_new_problem_is_told_once_as_a_node_event() -> None:
    c = chooser()
    told: list[str] = []
    c.on_problem = told.append
    view = NodeView(node({"k8s.amazonaws.com/eniConfig": "nope"}), {})
    c.on_view(view)
    c.on_view(view)  # the same problem again: no second Event
    c.on_view(NodeView(node({"k8s.amazonaws.com/eniConfig": "a"}), {"a": eniconfig("a", "subnet-0aaaaaaa")}))
    assert len(told) == 1 and "'nope'" in told[0]
    event = node_event("n1", "uid-1", told[0], 0.0)
    assert (event["kind"], event["type"], event["reason"]) == ("Event", "Warning", "ENIConfigUnavailable")
    assert event["involvedObject"] == {"kind": "Node", "name": "n1", "uid": "uid-1", "apiVersion": "v1"}
    assert event["firstTimestamp"] == "1970-01-01T00:00:00Z" and event["message"] == told[0]
