"""`vpcnet console` (not `lab console`) against a cluster: the lab stands in for one, read only through what a
cluster offers, its datastore (the Kubernetes API of a kubeconfig) and its node agents' introspection on
their node addresses (reached from the VPC's namespace, where the nodes' network is). The page's endpoints
show every node in its subnet with its ENIs and pods, the policy matrix from the datastore's policies, a
denied flow from the agents with `policy explain`'s text, and refuse to probe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabCli, pod_doc, running_lab

pytestmark = pytest.mark.root

PLACEMENT = {"a": "node1", "b": "node2"}
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-nobody, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 60) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def allow_agents_from_the_vpc(lab: Any) -> None:
    """The nodes' security groups let the VPC reach the agents' introspection port, as an operator who
    runs the console inside the VPC would allow it (the console connects from the VPC router's address)."""
    ec2 = lab.ec2()
    ids = [lab.node(name).instance_id for name in lab.node_names]
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    groups = {g["GroupId"] for r in reservations for i in r["Instances"] for g in i["SecurityGroups"]}
    cidr = lab.status()["vpc"]["cidr"]
    for group in sorted(groups):
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 61679, "ToPort": 61679, "IpRanges": [{"CidrIp": cidr}]}
            ],
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabCli, str]]:
    env = {
        "INTROSPECTION_BIND_ADDRESS": "0.0.0.0:61679",  # reachable at the node's address, as in a cluster
        "VPCNET_FLOW_LOGS": "denied",
        "VPCNET_FLOW_LOGS_WINDOW_SECONDS": "0.5",
    }
    with running_lab(nodes=2, azs=2, agents=True, agent_env=env, datastore="kubernetes") as lab:
        handle = LabCli(lab, tmp_path_factory.mktemp("console-cluster"))
        namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
        pods = "---\n".join(pod_doc(pod, node, "x") for pod, node in PLACEMENT.items())
        out = handle.apply(namespace + "---\n" + pods + "---\n" + POLICY, "cluster.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        allow_agents_from_the_vpc(lab)
        port = _free_port()
        log = (handle.tmp / "console.log").open("w")
        # Nothing of the lab's in the environment: the console knows the kubeconfig and the agents' port only.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("VPCNET_") and k != "KUBECONFIG"}
        argv = [sys.executable, "-c", "from vpcnet.cli.main import main; main()", "console"]
        argv += [
            "--port",
            str(port),
            "--kubeconfig",
            str(lab.layout.kubeconfig),
            "--netns",
            lab.layout.vpc_netns,
        ]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=clean)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/", timeout=5).close()
                    break
                except OSError:
                    assert proc.poll() is None, (handle.tmp / "console.log").read_text()
                    assert time.monotonic() < deadline, "the console did not answer in 60 s"
                    time.sleep(0.2)
            yield handle, url
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def test_nodes_in_their_subnets_with_enis_and_pods(cluster: tuple[LabCli, str]) -> None:
    lab, url = cluster
    status = lab.lab.status()
    topo = _get(url + "/api/topology")
    assert sorted(topo["nodes"]) == sorted(lab.lab.node_names)
    assert topo["pods"] == ["x/a", "x/b"] and topo["can_probe"] is False
    subnet_of = {n["name"]: n["subnet_id"] for n in status["nodes"]}
    for subnet in topo["subnets"]:
        for node in subnet["nodes"]:
            assert node["agent"] == "ready", node  # its agent answered at its node address
            assert subnet["id"] == subnet_of[node["name"]], (subnet["id"], node["name"])
            assert node["instance_type"] == "t3.medium" and node["enis"], node
            refs = [p["ref"] for e in node["enis"] for p in e["pods"]]
            assert refs == [f"x/{pod}" for pod, where in PLACEMENT.items() if where == node["name"]], node


def test_matrix_flows_and_explain_from_the_datastore_and_the_agents(cluster: tuple[LabCli, str]) -> None:
    lab, url = cluster
    matrix = _get(url + "/api/matrix?port=80")
    assert matrix["refs"] == ["x/a", "x/b"] and matrix["measured"] is None
    assert matrix["expected"]["x/a"]["x/b"] is False and matrix["expected"]["x/b"]["x/a"] is True
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(url + "/api/probe?port=80")
    assert refused.value.code == 503 and "needs the lab" in json.loads(refused.value.read())["error"]
    lab.cli("lab", "probe", "--protocol", "TCP", "--timeout", "0.5")  # packets: x/a -> x/b is dropped
    deadline = time.monotonic() + 60
    while True:
        flows = _get(url + "/api/flows")
        denied = [
            f for f in flows["flows"] if f["verdict"] == "deny" and (f["from"], f["to"]) == ("x/a", "x/b")
        ]
        if denied or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert denied and flows["errors"] == {}, flows
    assert denied[0]["node"] == "node2"  # dropped at b's ingress, on b's node
    explained = _get(f"{url}/api/explain?from=x/a&to=x/b&protocol=TCP&port=80")
    assert explained["allowed"] is False and denied[0]["explain"] in explained["text"], (denied[0], explained)
