"""Fault: a burst of deletes racing adds for the same pod names (a runtime retrying ADD while the pod is
deleted, a DEL arriving before its ADD has finished).

Each round: for every pod name, two to four ADDs and DELs started together a few hundred milliseconds
apart, all pods at once. Then the runtime's last word for each pod: ADD (retried until it succeeds), then the
checks, then DEL for every pod and the checks after it:
  addresses_duplicated  addresses given to more than one pod after the final ADDs
  pods_unwired          pods whose final ADD failed or whose eth0 does not carry the address
  leaks                 after the final DELs: addresses the agent still assigns, host veths left, EC2
                        addresses the agent does not know (all must be 0)
Run as root: `python faults/race.py [--quick]`.
"""

from __future__ import annotations

import concurrent.futures
import random
import subprocess
import sys
import time

from common import LabHandle, Scenario, log, poll
from ipamd_lab import cni, ipam, pod_netns
from nodecheck import assigned, ec2_disagreement, host_veths, retry_add, wired

ENV = {
    "VPCNET_POOL_INTERVAL": "0.5",
    "VPCNET_RECONCILE_INTERVAL": "3",
    "IP_COOLDOWN_PERIOD": "2",
    "WARM_IP_TARGET": "2",
}
ITYPE = "m5.large"
PODS = 16


def one_round(lab: LabHandle, sc: Scenario, r: int, rng: random.Random) -> dict[str, int]:
    pods = [f"r{r}x{i}" for i in range(PODS)]
    node_links = set(host_veths(lab))  # none: every pod of an earlier round is gone
    for p in pods:  # made once, before the race (concurrent ADDs must not race to create it)
        subprocess.run(["ip", "netns", "add", pod_netns(lab, p)], check=True)
    plan = [
        (rng.uniform(0, 0.4), p, rng.choice(["ADD", "DEL"]) if k else "ADD")
        for p in pods
        for k in range(rng.randint(2, 4))
    ]
    codes: dict[int, int] = {}

    def fire(step: tuple[float, str, str]) -> None:
        delay, pod, command = step
        time.sleep(delay)
        rc, out = cni(lab, "node1", command, pod)
        code = 0 if rc == 0 else int(out.get("code", -1))
        codes[code] = codes.get(code, 0) + 1

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        list(ex.map(fire, plan))
    deadline = time.monotonic() + 120
    final = {}
    unwired = 0
    for p in pods:
        out = retry_add(lab, p, deadline)
        if out is None:
            unwired += 1
        else:
            final[p] = out["ips"][0]["address"].split("/")[0]
    unwired += sum(1 for p, a in final.items() if not wired(lab, p, a))
    duplicated = len(final) - len(set(final.values()))
    held = assigned(ipam(lab, "node1"))
    if set(held) != set(final.values()):
        log(f"  the agent holds {sorted(set(held) - set(final.values()))} for no pod, misses"
            f" {sorted(set(final.values()) - set(held))}")  # fmt: skip
    extra = len(set(held) ^ set(final.values()))
    for p in pods:
        rc, out = cni(lab, "node1", "DEL", p)
        if rc != 0:
            log(f"  DEL {p}: {out}")
    poll(lambda: not assigned(ipam(lab, "node1")) and set(host_veths(lab)) <= node_links, 30)
    still = assigned(ipam(lab, "node1"))
    veths = sorted(set(host_veths(lab)) - node_links)
    ec2_unknown, _ = ec2_disagreement(lab, 60)
    leaks = extra + len(still) + len(veths) + ec2_unknown
    if still or veths:
        log(f"  after the DELs: assigned {sorted(still)}, host veths {veths}")
    for p in pods:
        subprocess.run(["ip", "netns", "del", pod_netns(lab, p)], capture_output=True, check=False)
    log(
        f"round {r + 1}/{sc.iterations}: {len(plan)} racing calls, answers by code"
        f" {dict(sorted(codes.items()))}; duplicated {duplicated}, unwired {unwired}, leaks {leaks}"
    )
    return {"calls": len(plan), "addresses_duplicated": duplicated, "pods_unwired": unwired, "leaks": leaks}


def main() -> int:
    sc = Scenario("race", __doc__ or "", iterations=(10, 1))
    rng = random.Random()
    totals: dict[str, int] = {}
    with sc.lab(nodes=1, instance_type=ITYPE, agents=True, agent_env=ENV) as lab:
        poll(lambda: ipam(lab, "node1")["totalIPs"] >= 2, 60)
        for r in range(sc.iterations):
            for k, v in one_round(lab, sc, r, rng).items():
                totals[k] = totals.get(k, 0) + v
    sc.add("rounds", sc.iterations)
    for k, v in totals.items():
        sc.add(k, v)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
