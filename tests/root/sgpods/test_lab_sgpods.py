"""Security groups for pods in a real lab (2 m5.large nodes, agents with ENABLE_POD_ENI=true, the branch
controller): a pod a SecurityGroupPolicy selects runs on a branch ENI with the policy's groups, reachable
only as those groups say (TCP 80 in; UDP 80 dropped at the fabric), while a pod on the same node without a
policy behaves as before; a deleted pod's branch cools down, serves the next pod with its groups, and is
deleted when nobody takes it, leaving no table, rule or device."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixture import LabCli, leftovers, pod_doc, running_lab

from vpcnet.controllers.branch_cooldown import RELEASED_TAG

pytestmark = [pytest.mark.root, pytest.mark.slow]

NS = "sg"
DEADLINE = 120.0


class Cluster(LabCli):
    def pod(self, name: str) -> dict[str, Any]:
        body = json.loads(self.cli("get", "pod", f"{NS}/{name}", "-o", "json"))
        assert isinstance(body, dict)
        return body

    def running(self, name: str) -> dict[str, Any]:
        """The pod once it runs (a branch pod waits for its branch: the kubelet retries its ADD)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            body = self.pod(name)
            if body.get("status", {}).get("phase") == "Running" and body["status"].get("podIP"):
                return body
            assert time.monotonic() < deadline, f"pod {name} did not run: {body.get('status')}"
            time.sleep(0.5)

    def probe(self, protocol: str) -> dict[str, dict[str, bool]]:
        matrix = json.loads(self.cli("lab", "probe", "--port", "80", "--protocol", protocol))
        assert isinstance(matrix, dict)
        return matrix


def _labelled(name: str, node: str, labels: str) -> str:
    return pod_doc(name, node, NS).replace(f"labels: {{pod: {name}}}", f"labels: {{pod: {name}, {labels}}}")


@contextlib.contextmanager
def _sgpods_lab(tmp: Path, mode: str) -> Iterator[Cluster]:
    """2 m5.large nodes; group `web` (TCP 80 from the VPC) for pods labelled app=web by a policy; pods
    web and plain on node1, client on node2, all running."""
    env = {"ENABLE_POD_ENI": "true", "POD_SECURITY_GROUP_ENFORCING_MODE": mode}
    with running_lab(nodes=2, azs=1, instance_type="m5.large", agents=True, agent_env=env) as lab:
        handle = Cluster(lab, tmp)
        ec2 = lab.ec2()
        web = ec2.create_security_group(
            GroupName=f"{lab.prefix}-web", Description="TCP 80 only", VpcId=lab.info.vpc_id
        )["GroupId"]
        tcp80 = {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": lab.info.vpc_cidr}],
        }
        ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[tcp80])
        policy = (
            f"apiVersion: vpcresources.k8s.aws/v1beta1\nkind: SecurityGroupPolicy\n"
            f"metadata: {{name: web, namespace: {NS}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  securityGroups: {{groupIds: [{web}]}}\n"
        )
        docs = [
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
            policy,
            _labelled("plain", "node1", "app: plain"),
            _labelled("client", "node2", "app: client"),
        ]
        path = handle.tmp / "sgpods.yaml"
        path.write_text("---\n".join(docs))
        handle.cli("apply", "-f", str(path))
        _apply_selected(handle, "web")
        for name in ("web", "plain", "client"):
            handle.running(name)
        handle.cli("lab", "wait", "--timeout", "60")
        handle.web_group = web  # type: ignore[attr-defined]
        yield handle
    assert leftovers(lab.layout) == []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with _sgpods_lab(tmp_path_factory.mktemp("sgpods"), "strict") as handle:
        yield handle


def test_a_selected_pod_runs_on_a_branch_eni_with_the_policys_groups(cluster: Cluster) -> None:
    web = cluster.running("web")
    (entry,) = json.loads(web["metadata"]["annotations"]["vpc.amazonaws.com/pod-eni"])
    assert web["status"]["podIP"] == entry["privateIp"]
    eni = cluster.lab.ec2().describe_network_interfaces(NetworkInterfaceIds=[entry["eniId"]])[
        "NetworkInterfaces"
    ][0]
    assert eni["InterfaceType"] == "branch"
    assert [g["GroupId"] for g in eni["Groups"]] == [cluster.web_group]  # type: ignore[attr-defined]
    assert eni["MacAddress"] == entry["ifAddress"]
    # The node's side: the branch's device, the pod's table (VLAN id + 100), strict mode's iif rules.
    vlan = entry["vlanId"]
    rules = cluster.lab.exec("node1", "ip", "rule").stdout
    assert f"iif vlan.eth.{vlan} lookup {vlan + 100}" in rules
    table = cluster.lab.exec("node1", "ip", "route", "show", "table", str(vlan + 100)).stdout
    assert f"default via {entry['subnetCidr'].rsplit('.', 1)[0]}.1 dev vlan.eth.{vlan}" in table
    # A pod no policy selects is an ordinary pod: an address of the node's ENIs, no branch.
    plain = cluster.running("plain")
    assert "vpc.amazonaws.com/pod-eni" not in plain["metadata"].get("annotations", {})
    assert plain["metadata"]["annotations"]["vpcnet.io/eni"] != entry["eniId"]


def test_the_branch_groups_decide_what_reaches_the_pod(cluster: Cluster) -> None:
    web, plain, client = (f"{NS}/{p}" for p in ("web", "plain", "client"))
    tcp = cluster.probe("TCP")
    assert tcp[client][web] and tcp[plain][web] and tcp[client][plain]
    udp = cluster.probe("UDP")
    # The group allows TCP 80 only: UDP to the branch pod is dropped by the VPC, from the other node and
    # (strict mode: its traffic always crosses the VPC) from its own node; the unselected pod is reached.
    assert not udp[client][web] and not udp[plain][web]
    assert udp[client][plain]
    # It is the group that drops the same-node pair (the packets leave through the branch's VLAN): let UDP 80
    # in and the pod on the same node reaches it too; take the rule back and it does not.
    udp80 = [
        {
            "IpProtocol": "udp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": cluster.lab.info.vpc_cidr}],
        }
    ]
    sg = cluster.lab.ec2()
    sg.authorize_security_group_ingress(GroupId=cluster.web_group, IpPermissions=udp80)  # type: ignore[attr-defined]
    try:
        opened = cluster.probe("UDP")
        assert opened[plain][web] and opened[client][web]
    finally:
        sg.revoke_security_group_ingress(GroupId=cluster.web_group, IpPermissions=udp80)  # type: ignore[attr-defined]
    assert not cluster.probe("UDP")[plain][web]
    # The other way the nodes' group decides: it admits its members only, and the branch pod is not one
    # (as on EKS, where the node group must allow the pod's group).
    assert not tcp[web][client] and not tcp[web][plain]
    ec2 = cluster.lab.ec2()
    inst = ec2.describe_instances(InstanceIds=[cluster.lab.node("node2").instance_id])["Reservations"][0]
    node_group = inst["Instances"][0]["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
    from_web = [
        {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "UserIdGroupPairs": [{"GroupId": cluster.web_group}],
        }
    ]  # type: ignore[attr-defined]
    ec2.authorize_security_group_ingress(GroupId=node_group, IpPermissions=from_web)
    try:
        tcp = cluster.probe("TCP")
        assert tcp[web][client] and tcp[web][plain]  # the referenced group's members: the branch's address
    finally:
        ec2.revoke_security_group_ingress(GroupId=node_group, IpPermissions=from_web)


def test_probe_compare_names_the_group_that_dropped_a_pair(cluster: Cluster) -> None:
    """No policy denies anything, so every pair the VPC drops is a security group's doing: `--compare` labels
    it with the group and direction instead of reporting the kernel and the engine as disagreeing."""
    web, plain, client = (f"{NS}/{p}" for p in ("web", "plain", "client"))
    labelled: dict[str, dict[tuple[str, str], str]] = {}
    for protocol in ("UDP", "TCP"):
        body = json.loads(
            cluster.cli("lab", "probe", "--port", "80", "--protocol", protocol, "--compare", "-o", "json")
        )
        assert body["disagreements"] == [], (protocol, body)
        by_groups = {(d["from"], d["to"]): d["reason"] for d in body["denied_by_security_groups"]}
        for src, dst in ((s, d) for s, row in body["measured"].items() for d, ok in row.items() if not ok):
            if src != dst:
                assert (src, dst) in by_groups, (protocol, src, dst, body)
        labelled[protocol] = by_groups
    web_group = cluster.web_group  # type: ignore[attr-defined]
    named = f"no ingress rule of {web_group} ({cluster.lab.prefix}-web)"
    assert named in labelled["UDP"][(client, web)] and "allows UDP/80 from" in labelled["UDP"][(client, web)]
    assert (client, web) not in labelled["TCP"]  # TCP 80 is what the group admits
    assert "no ingress rule of" in labelled["TCP"][(web, plain)]  # the nodes' group admits its members only
    # `policy explain --lab` says the same of one pair, from the pods as the API has them.
    files = [cluster.tmp / "ns.yaml"]
    files[0].write_text(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n")
    for name in ("client", "web"):
        files.append(cluster.tmp / f"{name}.json")
        files[-1].write_text(json.dumps(cluster.pod(name)))
    args = [arg for path in files for arg in ("-f", str(path))]
    explained = cluster.cli(
        "policy",
        "explain",
        *args,
        "--from",
        client,
        "--to",
        web,
        "--port",
        "80",
        "--protocol",
        "UDP",
        "--lab",
    ).splitlines()
    assert explained[0].endswith(": DENIED by security group"), explained
    assert named in explained[-1], explained
    allowed = cluster.cli("policy", "explain", *args, "--from", client, "--to", web, "--port", "80", "--lab")
    assert allowed.splitlines()[0].endswith(": ALLOWED"), allowed


def _tags(ec2: Any, eni_id: str) -> dict[str, str] | None:
    """The ENI's tags (None: it is gone)."""
    found = ec2.describe_network_interfaces(Filters=[{"Name": "network-interface-id", "Values": [eni_id]}])
    rows = found["NetworkInterfaces"]
    return {t["Key"]: t["Value"] for t in rows[0].get("TagSet", [])} if rows else None


def _apply_selected(cluster: Cluster, name: str) -> None:
    """A pod the policy selects, through `vpcnet apply` (its first ADD may find no branch yet: the kubelet
    retries once the controller has annotated it)."""
    from vpcnet.cli.main import app

    (cluster.tmp / f"{name}.yaml").write_text(_labelled(name, "node1", "app: web"))
    args = ["apply", "-f", str(cluster.tmp / f"{name}.yaml"), "--prefix", cluster.lab.prefix]
    result = cluster.runner.invoke(app, args)
    assert result.exit_code == 0 or "branch ENI is not ready yet" in result.output, result.output


def test_a_gone_pods_branch_cools_down_serves_the_next_pod_then_is_deleted(cluster: Cluster) -> None:
    """The lab runs the controller with EKS's shortest cool-down (30 s) and a 30 s reuse window."""
    web = cluster.running("web")
    (entry,) = json.loads(web["metadata"]["annotations"]["vpc.amazonaws.com/pod-eni"])
    vlan, eni = entry["vlanId"], entry["eniId"]
    cluster.cli("delete", "pod", f"{NS}/web")
    ec2 = cluster.lab.ec2()
    deadline = time.monotonic() + DEADLINE
    while not (_tags(ec2, eni) or {}).get(RELEASED_TAG):
        assert time.monotonic() < deadline, "the gone pod's branch was not released"
        time.sleep(0.5)
    # Cooling: still on the trunk under its VLAN id, the node's wiring for the old pod gone.
    assocs = ec2.describe_trunk_interface_associations()["InterfaceAssociations"]
    assert [a["VlanId"] for a in assocs if a["BranchInterfaceId"] == eni] == [vlan]
    assert f"lookup {vlan + 100}" not in cluster.lab.exec("node1", "ip", "rule").stdout
    released = float((_tags(ec2, eni) or {})[RELEASED_TAG])
    while time.time() < released + 31:  # cooled: wait out the cool-down (nothing to poll but the clock)
        time.sleep(0.5)
    # A new pod with the same groups on that node gets the cooled branch: its address and VLAN id.
    _apply_selected(cluster, "web2")
    again = cluster.running("web2")
    assert json.loads(again["metadata"]["annotations"]["vpc.amazonaws.com/pod-eni"]) == [entry]
    assert again["status"]["podIP"] == entry["privateIp"]
    web2, client = f"{NS}/web2", f"{NS}/client"
    assert cluster.probe("TCP")[client][web2] and not cluster.probe("UDP")[client][web2]
    # Gone again and not reused: deleted after the cool-down and the reuse window.
    cluster.cli("delete", "pod", web2)
    deadline = time.monotonic() + DEADLINE
    while _tags(ec2, eni) is not None:
        assert time.monotonic() < deadline, "the branch ENI outlived its cool-down and reuse window"
        time.sleep(0.5)
    assert not [
        a
        for a in ec2.describe_trunk_interface_associations()["InterfaceAssociations"]
        if a["BranchInterfaceId"] == eni
    ]
    assert f"lookup {vlan + 100}" not in cluster.lab.exec("node1", "ip", "rule").stdout
    assert not cluster.lab.exec("node1", "ip", "route", "show", "table", str(vlan + 100)).stdout.strip()
    links = cluster.lab.exec("node1", "ip", "-o", "link").stdout
    assert f"vlan.eth.{vlan}" not in links
    # The unselected pod is untouched.
    assert cluster.probe("TCP")[client][f"{NS}/plain"]


def test_standard_mode_lets_the_node_reach_the_pod_directly(tmp_path: Path) -> None:
    """POD_SECURITY_GROUP_ENFORCING_MODE=standard: the pod is still on its branch (the VPC drops UDP from
    the other node), but its own node reaches it without crossing the VPC, and its host veth has the
    normal prefix, so the node's network policy applies to it as well."""
    with _sgpods_lab(tmp_path, "standard") as cluster:
        web, plain, client = (f"{NS}/{p}" for p in ("web", "plain", "client"))
        body = cluster.running("web")
        (entry,) = json.loads(body["metadata"]["annotations"]["vpc.amazonaws.com/pod-eni"])
        assert body["metadata"]["annotations"]["vpcnet.io/host-interface"].startswith("eni")
        rules = cluster.lab.exec("node1", "ip", "rule").stdout
        assert f"from {entry['privateIp']} lookup {entry['vlanId'] + 100}" in rules
        udp = cluster.probe("UDP")
        assert not udp[client][web]  # the branch's group, at the VPC
        assert udp[plain][web]  # node-local: the VPC is not crossed
        compared = json.loads(
            cluster.cli("lab", "probe", "--port", "80", "--protocol", "UDP", "--compare", "-o", "json")
        )
        assert compared["disagreements"] == [], compared
        dropped = {(d["from"], d["to"]) for d in compared["denied_by_security_groups"]}
        assert (client, web) in dropped and (plain, web) not in dropped
