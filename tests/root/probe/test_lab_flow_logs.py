"""Flow logs in a real lab: after a policy, every pair `lab probe` finds denied appears in `vpcnet lab flows`
with the deciding policy and rule that `vpcnet policy explain` names, logged by the node whose verdict
point dropped it, and no node logs flows of pods it does not host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabCli, pod_doc, running_lab

pytestmark = pytest.mark.root

PLACEMENT = {("x", "a"): "node1", ("x", "b"): "node2", ("y", "c"): "node3"}
NAMESPACES = "---\n".join(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("x", "y"))
POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: c-no-tcp, namespace: y}
spec:
  selector: pod == 'c'
  types: [Egress]
  egress:
  - {action: Allow, protocol: UDP}
  - {action: Deny, protocol: TCP}
"""


@pytest.fixture(scope="module")
def flow_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCli]:
    env = {
        "VPCNET_MODE": "calico",
        "AWS_VPC_K8S_CNI_VETHPREFIX": "cali",
        "VPCNET_FLOW_LOGS": "denied",
        "VPCNET_FLOW_LOGS_WINDOW_SECONDS": "0.5",
    }
    with running_lab(nodes=3, azs=2, agents=True, agent_env=env) as lab:
        handle = LabCli(lab, tmp_path_factory.mktemp("flows"))
        pods = "---\n".join(pod_doc(pod, node, ns) for (ns, pod), node in PLACEMENT.items())
        out = handle.apply(NAMESPACES + "---\n" + pods, "pods.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        yield handle


def lab_flows(lab: LabCli, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lab.cli("lab", "flows", "-o", "json", *args).splitlines() if line]


def test_every_denied_pair_is_logged_with_the_rule_explain_names(flow_lab: LabCli) -> None:
    flow_lab.apply(POLICIES, "policies.yaml")
    flow_lab.cli("lab", "wait", "--timeout", "60")
    files = [flow_lab.tmp / "policies.yaml", flow_lab.tmp / "everything.yaml"]
    denied: list[tuple[str, str, str]] = []
    for protocol in ("TCP", "UDP"):
        out = json.loads(
            flow_lab.cli("lab", "probe", "--protocol", protocol, "--compare", "--timeout", "0.5")
        )
        assert out["disagreements"] == [], out
        denied += [(protocol, s, d) for s, row in out["measured"].items() for d, ok in row.items() if not ok]
    assert ("TCP", "y/c", "x/b") in denied and ("UDP", "x/a", "x/b") in denied

    node_of = {f"{ns}/{pod}": node for (ns, pod), node in PLACEMENT.items()}
    (flow_lab.tmp / "everything.yaml").write_text(
        NAMESPACES + "---\n" + "---\n".join(pod_doc(p, n, ns) for (ns, p), n in PLACEMENT.items())
    )
    deadline = time.monotonic() + 60
    while True:
        records = lab_flows(flow_lab, "--denied")
        missing = [pair for pair in denied if not _records_of(records, *pair)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"denied but not in the flow log: {missing}; records: {records}"

    for protocol, src, dst in denied:
        args = ["--from", src, "--to", dst, "--protocol", protocol, "--port", "80"]
        explained = explain([str(f) for f in files], args)
        for rec in _records_of(records, protocol, src, dst):
            assert rec["explain"] in explained, (rec, explained)
            # logged by the node of the pod whose verdict point dropped it
            local = rec["src"] if rec["direction"] == "egress" else rec["dst"]
            assert rec["node"] == node_of[f"{local['namespace']}/{local['pod']}"] == local["node"], rec
    # --policy and --pod filter
    by_policy = lab_flows(flow_lab, "--denied", "--policy", "c-no-tcp")
    assert by_policy and all(r["policy"] == "np/y/c-no-tcp" and r["rule"] == 1 for r in by_policy)
    by_pod = lab_flows(flow_lab, "--pod", "x/a")
    assert by_pod and all("x/a" in (_ref(r["src"]), _ref(r["dst"])) for r in by_pod)


def _ref(end: dict[str, Any]) -> str:
    return f"{end.get('namespace')}/{end.get('pod')}"


def explain(files: list[str], args: list[str]) -> str:
    from typer.testing import CliRunner

    from vpcnet.cli.main import app

    result = CliRunner().invoke(app, ["policy", "explain", *(a for f in files for a in ("-f", f)), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _records_of(records: list[dict[str, Any]], protocol: str, src: str, dst: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["protocol"] == protocol.lower()
        and _ref(r["src"]) == src
        and _ref(r["dst"]) == dst
        and r["dst"]["port"] == 80
    ]
