"""Flow bytes in a real lab: with VPCNET_FLOW_LOGS=all the node agents turn conntrack accounting on in their
node's namespace, and `vpcnet lab flows` shows each allowed connection with the bytes sent each way (within
a window, then final in its end record), logged by the nodes of its two pods and by no other node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tcp_transfer
from lab_fixture import LabCli, pod_doc, running_lab

from vpcnet.cli.labprobe import probe_endpoints

pytestmark = pytest.mark.root

PLACEMENT = {"a": "node1", "b": "node2", "c": "node1"}
SENT = 400_000
ANSWERED = 90_000
PORT = 8080  # served by the test's own listener in the target pod (the pod server answers one line)


@pytest.fixture(scope="module")
def bytes_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCli]:
    env = {
        "VPCNET_MODE": "calico",
        "AWS_VPC_K8S_CNI_VETHPREFIX": "cali",
        "VPCNET_FLOW_LOGS": "all",
        "VPCNET_FLOW_LOGS_ALLOW_RATE": "0",
        "VPCNET_FLOW_LOGS_WINDOW_SECONDS": "0.5",
    }
    with running_lab(nodes=2, azs=2, agents=True, agent_env=env) as lab:
        handle = LabCli(lab, tmp_path_factory.mktemp("flowbytes"))
        namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
        pods = "---\n".join(pod_doc(pod, node, "x") for pod, node in PLACEMENT.items())
        out = handle.apply(namespace + "---\n" + pods, "pods.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        yield handle


def lab_flows(lab: LabCli) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lab.cli("lab", "flows", "-o", "json").splitlines() if line]


def test_allowed_connections_carry_the_bytes_sent(bytes_lab: LabCli) -> None:
    lab = bytes_lab.lab
    for node in lab.node_names:
        acct = lab.exec(node, "sysctl", "-n", "net.netfilter.nf_conntrack_acct")
        assert acct.stdout.strip() == "1", f"{node}: the agent did not turn accounting on: {acct}"
        # A closed connection's entry ends a second after its close (not two minutes): its end record comes.
        lab.exec(node, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
    ends = {e.name: tcp_transfer.End(e.netns, e.ip) for e in probe_endpoints(lab.layout)}
    done = {
        target: tcp_transfer.transfer(ends["x/a"], ends[f"x/{target}"], PORT, SENT, ANSWERED)
        for target in "bc"
    }
    ports = {target: d.source_port for target, d in done.items()}

    def ours(records: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
        return [
            r
            for r in records
            if r["src"].get("pod") == "a"
            and r["dst"].get("pod") == target
            and r["src"]["port"] == ports[target]
            and r["dst"]["port"] == PORT
        ]

    def complete(records: list[dict[str, Any]]) -> bool:
        for target in "bc":
            mine = ours(records, target)
            windows = {r["direction"] for r in mine if "counts" in r and r.get("event") != "end"}
            finals = {r["direction"] for r in mine if r.get("event") == "end"}
            if windows != {"egress", "ingress"} or finals != {"egress", "ingress"}:
                return False
        return True

    deadline = time.monotonic() + 90
    records = lab_flows(bytes_lab)
    while not complete(records) and time.monotonic() < deadline:
        time.sleep(1)
        records = lab_flows(bytes_lab)
    for target in "bc":
        mine = ours(records, target)
        assert complete(records), f"a -> {target}: window and end records on both ends expected, got {mine}"
        for rec in mine:
            assert rec["verdict"] == "allow" and rec["reason"] == "no-policy", rec
            # logged by the node of the pod whose chain saw it: a's node for egress, the target's for ingress
            local = rec["src"] if rec["direction"] == "egress" else rec["dst"]
            assert rec["node"] == PLACEMENT[local["pod"]], rec
            if rec.get("event") == "end":
                assert rec["counts"]["final"] is True
                assert tcp_transfer.counts_match(rec["counts"], done[target]), (rec, done[target])
            elif "counts" in rec:
                # read at a window's end, maybe before the last packets: never more than was sent
                orig = rec["counts"]["orig"]
                assert orig["bytes"] <= done[target].sent_on_wire + tcp_transfer.HEADERS * orig["packets"], (
                    rec
                )
            assert (
                rec.get("reply")
                == {
                    "src": {"ip": ends[f"x/{target}"].ip, "port": PORT},
                    "dst": {"ip": ends["x/a"].ip, "port": ports[target]},
                }
                or "counts" not in rec
            ), rec
    # node2 hosts neither a nor c: it logged nothing of a -> c
    assert all(r["node"] == "node1" for r in ours(records, "c")), ours(records, "c")
    table = bytes_lab.cli("lab", "flows")
    assert any(f":{ports['b']}" in line and "conntrack" in line for line in table.splitlines()), table
