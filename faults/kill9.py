"""Fault: kill -9 of a node agent in the middle of a burst of pod starts, then its restart.

Each round: a burst of ADDs from a small pool (EC2 slowed so ENIs are being attached when the kill lands),
SIGKILL to the agent as the first pods get their addresses, the agent started again (as `lab up` repairs a
node), the runtime retries every pod until it has an address. Then:
  addresses_lost        pods whose address changed across the restart, or that the agent (or its
                        checkpoint) does not hold for them
  addresses_duplicated  addresses given to more than one pod
  pods_unwired          pods that never got an address, or whose eth0 does not carry it
  ec2_unknown           addresses EC2 holds on the node's ENIs that the agent does not, once its reconcile
                        has had a minute (plus the converse, EC2 missing one the agent holds)
all must be 0. The pods are deleted between rounds. Run as root: `python faults/kill9.py [--quick]`.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time

from common import LabHandle, Scenario, log, poll
from ipamd_lab import cni, ipam, kill_agent, pod_netns, set_faults, unattached_enis_of
from nodecheck import assigned, ec2_disagreement, restart_agent, retry_add, wired

ENV = {
    "VPCNET_POOL_INTERVAL": "0.5",
    "VPCNET_RECONCILE_INTERVAL": "3",
    "IP_COOLDOWN_PERIOD": "2",
    "WARM_IP_TARGET": "1",
    "VPCNET_LEAKED_ENI_GRACE": "3",
    "VPCNET_RELEASE_DELAY": "1",  # surplus addresses go back soon after a round's pods (default 60 s)
}
ITYPE = "m5.large"
BURST = 20
SMALL_POOL = 4  # WARM_IP_TARGET=1 on an empty node: what the pool shrinks back to between rounds


def one_round(lab: LabHandle, sc: Scenario, r: int) -> dict[str, int]:
    set_faults(lab, {"latency": {"AttachNetworkInterface": 2.0, "AssignPrivateIpAddresses": 0.2}})
    poll(lambda: ipam(lab, "node1")["totalIPs"] >= 1, 60)
    pods = [f"k{r}x{i}" for i in range(BURST)]
    before_kill: dict[str, str] = {}
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        futures = {ex.submit(cni, lab, "node1", "ADD", p): p for p in pods}
        # the kill lands once the first pods have their addresses (the rest wait on EC2)
        concurrent.futures.wait(futures, timeout=10, return_when=concurrent.futures.FIRST_COMPLETED)
        time.sleep(0.2)
        kill_agent(lab, "node1")
        for f in concurrent.futures.as_completed(futures):
            rc, out = f.result()
            if rc == 0:
                before_kill[futures[f]] = out["ips"][0]["address"].split("/")[0]
    cut = 0 < len(before_kill) < BURST
    restart_agent(lab)
    set_faults(lab, {"reset": True})
    deadline = time.monotonic() + 120
    final: dict[str, str] = {}
    lost = unwired = 0
    for p in pods:
        out = retry_add(lab, p, deadline)
        if out is None:
            unwired += 1
            continue
        final[p] = out["ips"][0]["address"].split("/")[0]
        if p in before_kill and final[p] != before_kill[p]:
            log(f"  {p} had {before_kill[p]} before the kill and {final[p]} after")
            lost += 1
    duplicated = len(final) - len(set(final.values()))
    unwired += sum(1 for p, a in final.items() if not wired(lab, p, a))
    poll(lambda: unattached_enis_of(lab, "node1") == [], 30)
    ec2_unknown, doc = ec2_disagreement(lab, 60)
    held = assigned(doc)
    checkpoint = json.loads(lab.layout.checkpoint_file("node1").read_text())
    in_checkpoint = {a["ipv4"] for a in checkpoint["allocations"]}
    missing = {a for a in final.values() if a not in held or a not in in_checkpoint}
    if missing:
        log(f"  addresses the agent or its checkpoint does not hold: {sorted(missing)}")
    lost += len(missing)
    log(
        f"round {r + 1}/{sc.iterations}: {len(before_kill)}/{BURST} done before the kill"
        f"{'' if cut else ' (the burst was not cut)'}; lost {lost}, duplicated {duplicated},"
        f" unwired {unwired}, EC2 unknown {ec2_unknown}"
    )
    for p in pods:  # the next round starts from an empty node with a small pool (its burst waits on EC2)
        cni(lab, "node1", "DEL", p)
        subprocess.run(["ip", "netns", "del", pod_netns(lab, p)], capture_output=True, check=False)
    if r + 1 < sc.iterations and not poll(lambda: ipam(lab, "node1")["totalIPs"] <= SMALL_POOL, 90, 0.5):
        log(f"  the pool did not shrink back to {SMALL_POOL} addresses: {ipam(lab, 'node1')['totalIPs']}")
    return {
        "addresses_lost": lost,
        "addresses_duplicated": duplicated,
        "pods_unwired": unwired,
        "ec2_unknown": ec2_unknown,
        "rounds_not_cut": 0 if cut else 1,
    }


def main() -> int:
    sc = Scenario("kill9", __doc__ or "", iterations=(20, 3))
    totals: dict[str, int] = {}
    with sc.lab(nodes=1, instance_type=ITYPE, agents=True, agent_env=ENV) as lab:
        for r in range(sc.iterations):
            for k, v in one_round(lab, sc, r).items():
                totals[k] = totals.get(k, 0) + v
    sc.add("rounds", sc.iterations)
    for k, v in totals.items():
        sc.add(k, v)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
