"""Flow logs read from the kernel: real packets through the policy chains' verdict points (NFLOG), aggregated
and named by the flow log, for both back ends; the deciding policy and rule are the ones `policy explain`
names for the same pair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import policy_netkit as netkit
import pytest

from vpcnet.agent.flow_logs import FlowLog
from vpcnet.api import load_documents
from vpcnet.dataplane.calc.feed import feed_resource
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.nflog_socket import NflogSocket
from vpcnet.dataplane.policy_backend import BACKENDS, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import FlowLogSpec
from vpcnet.policy.evaluate import Flow, endpoint, evaluate
from vpcnet.policy.state import ClusterState

pytestmark = pytest.mark.root

NS = "shop"
POLICIES = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-guard, namespace: shop}
spec:
  order: 10
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [82]}
  - action: Deny
    protocol: TCP
    destination: {ports: [81]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80, protocol: TCP}]
"""


def pod_yaml(name: str, ip: str, node: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}
status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"""


@pytest.fixture
def node() -> Iterator[netkit.Node]:
    with netkit.node() as made:
        yield made


def collect(sock: NflogSocket, flow_log: FlowLog, want_packets: int) -> list[dict[str, Any]]:
    async def run() -> None:
        sock.start_reading(flow_log.add)
        deadline = time.monotonic() + 20
        while flow_log.packets < want_packets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the kernel's batch timer (5 centiseconds) and anything late

    asyncio.run(run())
    return flow_log.flush()


@pytest.mark.parametrize("backend", BACKENDS)
def test_denied_and_allowed_flows_are_named_like_explain(node: netkit.Node, backend: str) -> None:
    web = node.add_pod("web", k8s_namespace=NS)
    db = node.add_pod("db", k8s_namespace=NS)
    other = node.add_pod("other", k8s_namespace=NS)
    text = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n" + POLICIES
    for pod in (web, db, other):
        text += "---\n" + pod_yaml(pod.name, pod.ip, "n1")
    text += "---\n" + pod_yaml("remote", "10.77.9.9", "n2")  # another node's pod: no chains here
    resources = load_documents(text, "test")
    spec = FlowLogSpec("all", group=27, allow_rate=0)
    calc = PolicyCalculator("n1", ["eni"], spec)
    for resource in resources:
        feed_resource(calc, resource)
    dataplane = make_dataplane(backend, SubprocessRunner(node.netns))
    assert asyncio.run(dataplane.apply(calc.desired())).total > 0
    dataplane.resync()  # the kernel's copy of the log rules reads back as what was applied
    assert asyncio.run(dataplane.apply(calc.desired())).total == 0

    sock = NflogSocket(spec.group, spec.snaplen, netns=f"/run/netns/{node.netns}")
    sock.open()
    try:
        assert netkit.tcp_reaches(web, db, 80)  # allowed by db-from-web
        assert not netkit.tcp_connects(web, db, 81)  # denied by db-guard's rule 1
        assert not netkit.tcp_connects(other, db, 80)  # denied by the end of tier default
        assert netkit.tcp_reaches(db, other, 90)  # no policy selects other
        flow_log = FlowLog(calc, "n1", sink=None)
        records = collect(sock, flow_log, want_packets=6)
    finally:
        sock.close()

    def find(src: netkit.Pod, dst: netkit.Pod, port: int, direction: str) -> dict[str, Any]:
        found = [
            r
            for r in records
            if r["src"]["ip"] == src.ip
            and r["dst"]["ip"] == dst.ip
            and r["dst"]["port"] == port
            and r["direction"] == direction
        ]
        assert found, f"no {direction} flow {src.name}->{dst.name}:{port} in {records}"
        return found[0]

    state = ClusterState.from_resources(resources)
    for src, dst, port in ((web, db, 81), (other, db, 80)):
        rec = find(src, dst, port, "ingress")
        decision = evaluate(
            state, Flow(endpoint(state, f"{NS}/{src.name}"), endpoint(state, f"{NS}/{dst.name}"), 6, port)
        ).ingress
        assert rec["verdict"] == "deny" and not decision.allowed
        assert (rec["tier"], rec["policy"], rec["rule"], rec["reason"]) == (
            decision.tier,
            decision.policy,
            decision.rule_index,
            decision.reason.value,
        )
        assert (rec["src"]["pod"], rec["dst"]["pod"], rec["dst"]["node"]) == (src.name, dst.name, "n1")
        assert rec["dst"]["labels"]["app"] == dst.name
        assert rec["packets"] >= 1 and rec["bytes"] >= 60
    assert find(web, db, 81, "ingress")["policy"] == "np/shop/db-guard"
    assert find(web, db, 81, "ingress")["rule"] == 1

    allowed = find(web, db, 80, "ingress")
    decision = evaluate(state, Flow(endpoint(state, f"{NS}/web"), endpoint(state, f"{NS}/db"), 6, 80)).ingress
    assert (allowed["verdict"], allowed["policy"], allowed["rule"]) == (
        "allow",
        decision.policy,
        decision.rule_index,
    )
    assert find(db, other, 90, "ingress")["reason"] == "no-policy"
    assert find(web, db, 80, "egress")["reason"] == "no-policy"
    # The remote pod's address never appears: it sent nothing through this node.
    assert all("10.77.9.9" not in (r["src"]["ip"], r["dst"]["ip"]) for r in records)
