"""Custom networking in the lab, over both datastores: the agent follows its Node and the ENIConfigs that
kubectl writes to the lab's API (in etcd mode through kube-controllers' mirror), and puts new ENIs in the
ENIConfig's subnet with its security groups. Before the node names an existing ENIConfig nothing is
allocated and a pod is told why; relabelling the node moves new ENIs only."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from ipamd_lab import add_until_done, agreed_with_ec2, cni, ec2_enis, ipam, wait_for
from lab_fixture import LabHandle, running_lab

from vpcnet.lab.kubectl import find_kubectl

pytestmark = [pytest.mark.root, pytest.mark.slow]

KUBECTL = find_kubectl()
if KUBECTL is None:
    pytest.skip("needs kubectl (Debian's kubernetes-client)", allow_module_level=True)

ENV = {
    "VPCNET_POOL_INTERVAL": "0.5",
    "VPCNET_RECONCILE_INTERVAL": "3",
    "IP_COOLDOWN_PERIOD": "5",
    "WARM_IP_TARGET": "3",
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true",
}
LABEL = "k8s.amazonaws.com/eniConfig"


def kubectl(lab: LabHandle, tmp: Path, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    argv = [KUBECTL, "--kubeconfig", str(lab.layout.kubeconfig), "--cache-dir", str(tmp / "cache"), *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def eniconfig(name: str, subnet: str, group: str) -> str:
    return (
        "apiVersion: crd.k8s.amazonaws.com/v1alpha1\nkind: ENIConfig\n"
        f"metadata: {{name: {name}}}\nspec: {{subnet: {subnet}, securityGroups: [{group}]}}\n"
    )


def target(lab: LabHandle) -> dict[str, Any]:
    doc: dict[str, Any] = ipam(lab, "node1")["eniTarget"]
    return doc


def secondary_enis(lab: LabHandle) -> list[dict[str, Any]]:
    return [e for e in ec2_enis(lab, "node1") if e["Attachment"]["DeviceIndex"] != 0]


def node_events(lab: LabHandle, tmp: Path) -> str:
    """The messages of the ENIConfigUnavailable Warning Events on node1."""
    doc = json.loads(kubectl(lab, tmp, "get", "events", "-n", "default", "-o", "json"))
    return "\n".join(
        e["message"]
        for e in doc["items"]
        if e.get("reason") == "ENIConfigUnavailable"
        and e["involvedObject"]["name"] == "node1"
        and e.get("type") == "Warning"
    )


def address(out: dict[str, Any]) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(out["ips"][0]["address"].split("/")[0])


@pytest.mark.parametrize("datastore", ["kubernetes", "etcd"])
def test_pods_get_addresses_from_the_eniconfig_the_node_is_labelled_with(
    tmp_path: Path, datastore: str
) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with running_lab(
        nodes=1,
        azs=1,
        instance_type="m5.large",
        agents=True,
        agent_env=ENV,
        pod_subnets=2,
        datastore=datastore,
    ) as lab:
        subnets = {name: s for name, s in lab.info.subnets.items() if s["role"] == "pod"}
        first, second = subnets["pod-us-east-1a"], subnets["pod2-us-east-1a"]
        ec2 = lab.ec2()
        groups = {
            name: ec2.create_security_group(
                GroupName=f"{lab.prefix}-{name}", Description=name, VpcId=lab.info.vpc_id
            )["GroupId"]
            for name in ("pods-a", "pods-b")
        }

        # No ENIConfig named "default" and no label: nothing is allocated, and a pod is told why.
        wait_for(
            "the agent to report the missing ENIConfig", lambda: "'default'" in target(lab)["problem"], 90
        )
        rc, out = cni(lab, "node1", "ADD", "p0")
        assert rc != 0 and "does not exist" in json.dumps(out), out
        assert secondary_enis(lab) == [], "an ENI was made without an ENIConfig"
        assert ipam(lab, "node1")["totalIPs"] == 0
        if datastore == "kubernetes":  # and `kubectl describe node` shows it (etcd mode: the log alone)
            wait_for("the Node's Warning Event", lambda: "'default'" in node_events(lab, tmp_path), 60)

        # Label the node to an ENIConfig that exists: the pool grows in its subnet, with its group.
        kubectl(lab, tmp_path, "apply", "-f", "-", stdin=eniconfig("pods-a", first["id"], groups["pods-a"]))
        kubectl(lab, tmp_path, "apply", "-f", "-", stdin=eniconfig("pods-b", second["id"], groups["pods-b"]))
        kubectl(lab, tmp_path, "label", "node", "node1", f"{LABEL}=pods-a", "--overwrite")
        wait_for("the target to be pods-a", lambda: target(lab)["subnet"] == first["id"], 90)
        got = [add_until_done(lab, "node1", f"a{i}", time.monotonic() + 90) for i in range(3)]
        assert all(address(o) in ipaddress.IPv4Network(first["cidr"]) for o in got), got
        doc = agreed_with_ec2(lab, "node1")
        primary = next(e for e in doc["ENIs"] if e["isPrimary"])
        assert primary["addresses"] == 0 and not primary["carriesPods"]
        (eni_a,) = secondary_enis(lab)
        assert eni_a["SubnetId"] == first["id"]
        assert [g["GroupId"] for g in eni_a["Groups"]] == [groups["pods-a"]]
        assert doc["maxPods"] == 2 * 9 + 2  # m5.large without the primary ENI: (3 - 1) x (10 - 1) + 2

        # Relabel to pods-b: the attached ENI stays in pods-a's subnet; the next ENI goes to pods-b's.
        kubectl(lab, tmp_path, "label", "node", "node1", f"{LABEL}=pods-b", "--overwrite")
        wait_for("the target to be pods-b", lambda: target(lab)["subnet"] == second["id"], 90)
        more = []
        deadline = time.monotonic() + 180
        while not any(e["SubnetId"] == second["id"] for e in secondary_enis(lab)):
            assert time.monotonic() < deadline, "no ENI was made in pods-b's subnet"
            more.append(add_until_done(lab, "node1", f"b{len(more)}", time.monotonic() + 90))
            assert len(more) <= 9, "the first ENI is full and still no ENI in pods-b's subnet"
        wait_for("two secondary ENIs", lambda: len(secondary_enis(lab)) == 2, 60)
        by_subnet = {e["SubnetId"]: e for e in secondary_enis(lab)}
        assert by_subnet[first["id"]]["NetworkInterfaceId"] == eni_a["NetworkInterfaceId"]
        assert [g["GroupId"] for g in by_subnet[second["id"]]["Groups"]] == [groups["pods-b"]]
        assert [g["GroupId"] for g in by_subnet[first["id"]]["Groups"]] == [groups["pods-a"]]
        while len(more) < 9:  # past the first ENI's 9 addresses: a pod gets one from pods-b's subnet
            more.append(add_until_done(lab, "node1", f"b{len(more)}", time.monotonic() + 90))
        assert any(address(o) in ipaddress.IPv4Network(second["cidr"]) for o in more), more
        node_cidr = ipaddress.IPv4Network(lab.info.subnets["node-us-east-1a"]["cidr"])
        assert not any(address(o) in node_cidr for o in got + more)

        # An ENIConfig that does not exist: the agent says so, and makes nothing more.
        before = {e["NetworkInterfaceId"] for e in secondary_enis(lab)}
        kubectl(lab, tmp_path, "label", "node", "node1", f"{LABEL}=nope", "--overwrite")
        wait_for("the agent to report 'nope'", lambda: "'nope'" in target(lab)["problem"], 90)
        assert "does not exist" in target(lab)["problem"]
        if datastore == "kubernetes":
            wait_for("the Event for 'nope'", lambda: "'nope'" in node_events(lab, tmp_path), 60)
        agreed_with_ec2(lab, "node1")
        assert {e["NetworkInterfaceId"] for e in secondary_enis(lab)} == before
