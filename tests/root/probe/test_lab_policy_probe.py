"""`vpcnet lab probe --compare` against the policy agents of a real lab: after `lab wait`, the kernel (probed
with TCP, UDP and SCTP packets across nodes and AZs) agrees with the policy engine, for both back ends.

The lab runs in Calico mode here because every node agent component it needs is built; the probe and the
agents' enforcement on the pods' veths are the same in VPC mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lab_fixture import LabCli, pod_doc, running_lab

from vpcnet.cni.install import CONFLIST_NAME

pytestmark = pytest.mark.root

PLACEMENT = {("x", "a"): "node1", ("x", "b"): "node2", ("y", "c"): "node3"}
# b takes TCP and SCTP on 80 from a only (nothing over UDP); c may send only UDP.
POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80, protocol: TCP}, {port: 80, protocol: SCTP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-udp-only, namespace: y}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 80, protocol: UDP}]}]
"""
# Expected off-diagonal cells, per protocol: (source, target) -> reachable.
EXPECTED = {
    "TCP": {("x/a", "x/b"): True, ("y/c", "x/b"): False, ("x/b", "x/a"): True, ("y/c", "x/a"): False},
    "UDP": {("x/a", "x/b"): False, ("y/c", "x/b"): False, ("x/b", "x/a"): True, ("y/c", "x/a"): True},
    "SCTP": {("x/a", "x/b"): True, ("y/c", "x/b"): False, ("x/b", "y/c"): True, ("y/c", "x/a"): False},
}


def manifest() -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("x", "y")]
    docs += [pod_doc(pod, node, ns) for (ns, pod), node in PLACEMENT.items()]
    return "---\n".join(docs)


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def policy_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCli]:
    env = {
        "VPCNET_MODE": "calico",
        "AWS_VPC_K8S_CNI_VETHPREFIX": "cali",
        "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
        "CALICO_IPV4POOL_VXLAN": "CrossSubnet",
        "VPCNET_POLICY_BACKEND": request.param,
    }
    with running_lab(nodes=3, azs=2, agents=True, agent_env=env) as lab:
        # `lab up` installed the plugin on every node (the calico mode's cali veth prefix included).
        for node in lab.node_names:
            conflist = json.loads((lab.layout.cni_conf_dir(node) / CONFLIST_NAME).read_text())
            assert conflist["plugins"][0]["vethPrefix"] == "cali", node
        handle = LabCli(lab, tmp_path_factory.mktemp(f"policy-{request.param}"))
        out = handle.apply(manifest(), "pods.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        yield handle


def test_probe_agrees_with_the_engine_before_and_after_policies(policy_lab: LabCli) -> None:
    refs = sorted(f"{ns}/{pod}" for ns, pod in PLACEMENT)
    for protocol in ("TCP", "UDP", "SCTP"):
        matrix = json.loads(policy_lab.cli("lab", "probe", "--protocol", protocol))
        assert matrix == {s: {d: True for d in refs} for s in refs}, protocol

    policy_lab.apply(POLICIES, "policies.yaml")
    for protocol, cells in EXPECTED.items():
        out = policy_lab.cli("lab", "probe", "--protocol", protocol, "--compare", "--timeout", "0.5")
        body = json.loads(out)
        assert body["disagreements"] == [], (protocol, body)
        for (src, dst), reachable in cells.items():
            assert body["measured"][src][dst] is reachable, (protocol, src, dst)

    # Take the policies away again: everything is open, and the kernel says so once the agents caught up.
    for name in ("x/b-from-a", "y/c-udp-only"):
        ns, policy = name.split("/")
        policy_lab.cli("delete", "networkpolicy", policy, "-n", ns)
    policy_lab.cli("lab", "wait", "--timeout", "60")
    matrix = json.loads(policy_lab.cli("lab", "probe", "--protocol", "SCTP"))
    assert matrix == {s: {d: True for d in refs} for s in refs}
