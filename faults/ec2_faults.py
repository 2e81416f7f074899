"""Fault: EC2 throttling and injected failures during a burst of pod starts.

Each round: the lab's EC2 endpoint throttles mutating calls (a bucket of 2, 1 token/s back), fails a third of
AssignPrivateIpAddresses and a fifth of AttachNetworkInterface/CreateNetworkInterface calls with EC2's own
server errors, and adds latency; then a burst of ADDs, each made once, timed. An ADD either succeeds, fails
with a retryable spec code (11, "try again later"), fails with another code, or hangs (no answer within
HUNG_S). The runtime then retries the failed ones until they succeed, the faults are cleared, and:
  adds_retryable  ADDs that failed with 11 (what a runtime can act on)
  adds_failed_other ADDs that failed with any other code (a runtime would not retry them: must be 0)
  adds_hung       ADDs with no answer within HUNG_S (must be 0)
  leaks           EC2 addresses the agent does not know, ENIs left unattached, addresses the agent holds for
                  no pod; after deleting every pod, addresses still assigned (must be 0)
A last round makes the faults outlast an ADD's wait (VPCNET_ASSIGN_WAIT, 30 s): every call that would grow
the pool fails, so the ADDs the warm pool cannot serve must answer 11 within HUNG_S; EC2 then recovers and the
runtime's retries succeed. The same checks apply, and:
  outwait_rounds_not_outwaited  such rounds in which no ADD answered 11 (the round tested nothing: must be 0)
Run as root: `python faults/ec2_faults.py [--quick]`.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time

from common import LabHandle, Scenario, log, poll
from ipamd_lab import cni, ipam, pod_netns, set_faults, unattached_enis_of
from nodecheck import assigned, ec2_disagreement, retry_add, wired

ENV = {
    "VPCNET_POOL_INTERVAL": "0.5",
    "VPCNET_RECONCILE_INTERVAL": "3",
    "IP_COOLDOWN_PERIOD": "2",
    "WARM_IP_TARGET": "1",
    "VPCNET_LEAKED_ENI_GRACE": "3",
    "VPCNET_RELEASE_DELAY": "3",  # give surplus addresses back soon after the pods go (default 60 s)
}
ITYPE = "m5.large"
BURST = 24
HUNG_S = 60.0
SMALL_POOL = 4  # WARM_IP_TARGET=1 on an empty node: what the pool shrinks back to between rounds
FAULTS = {
    "latency": {"*": 0.05, "AttachNetworkInterface": 1.0},
    "throttle": {"mutating": {"capacity": 2, "refill_per_second": 1}},
    "failures": {
        "AssignPrivateIpAddresses": {"code": "InternalError", "probability": 0.33},
        "AttachNetworkInterface": {"code": "Unavailable", "probability": 0.2},
        "CreateNetworkInterface": {"code": "InternalError", "probability": 0.2},
    },
}
# The outwait round: EC2 fails every call that would grow the pool for as long as the ADDs wait, so a burst
# larger than the warm pool (SMALL_POOL) must outwait it.
OUTWAIT_BURST = 8
OUTWAIT_FAULTS = {
    "failures": {
        name: {"code": "InternalError", "probability": 1.0}
        for name in ("AssignPrivateIpAddresses", "AttachNetworkInterface", "CreateNetworkInterface")
    }
}


def timed_add(lab: LabHandle, pod: str) -> tuple[int, int, float]:
    """(exit code, CNI code or 0, seconds) of one ADD."""
    start = time.monotonic()
    rc, out = cni(lab, "node1", "ADD", pod)
    return rc, (0 if rc == 0 else int(out.get("code", -1))), time.monotonic() - start


def one_round(lab: LabHandle, r: int, rounds: int, outwait: bool = False) -> dict[str, int]:
    """Round r of rounds: a burst under FAULTS (retried with the faults still on), or with outwait a burst
    under OUTWAIT_FAULTS (retried once EC2 recovers, as nothing could grow the pool before)."""
    pods = [f"e{r}x{i}" for i in range(OUTWAIT_BURST if outwait else BURST)]
    set_faults(lab, {"reset": True, **(OUTWAIT_FAULTS if outwait else FAULTS)})
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        results = dict(zip(pods, ex.map(lambda p: timed_add(lab, p), pods), strict=True))
    codes = [code for _, code, _ in results.values()]
    hung = sum(1 for _, _, took in results.values() if took > HUNG_S)
    retryable = codes.count(11)
    other = sum(1 for c in codes if c not in (0, 11))
    for p, (_, code, _) in results.items():
        if code not in (0, 11):
            log(f"  ADD {p} failed with code {code}")
    if outwait:
        set_faults(lab, {"reset": True})
    deadline = time.monotonic() + 180
    final = {}
    unwired = 0
    for p in pods:  # the runtime retries, the faults still on
        out = retry_add(lab, p, deadline)
        if out is None:
            unwired += 1
        else:
            final[p] = out["ips"][0]["address"].split("/")[0]
    set_faults(lab, {"reset": True})
    unwired += sum(1 for p, a in final.items() if not wired(lab, p, a))
    duplicated = len(final) - len(set(final.values()))
    poll(lambda: unattached_enis_of(lab, "node1") == [], 60)
    ec2_unknown, doc = ec2_disagreement(lab, 90)
    stray = {a for a in assigned(doc) if a not in final.values()}
    if stray:
        log(f"  addresses the agent holds for no pod: {sorted(stray)}")
    leaks = ec2_unknown + len(unattached_enis_of(lab, "node1")) + len(stray)
    for p in pods:
        cni(lab, "node1", "DEL", p)
        subprocess.run(["ip", "netns", "del", pod_netns(lab, p)], capture_output=True, check=False)
    left = assigned(ipam(lab, "node1"))
    leaks += len(left)
    # the next round starts from a small pool again, so that its burst goes to EC2 (not to warm addresses)
    if r + 1 < rounds and not poll(lambda: ipam(lab, "node1")["totalIPs"] <= SMALL_POOL, 90, 0.5):
        log(f"  the pool did not shrink back to {SMALL_POOL} addresses: {ipam(lab, 'node1')['totalIPs']}")
    log(
        f"round {r + 1}/{rounds}{' (outwait)' if outwait else ''}: first tries ok {codes.count(0)},"
        f" retryable {retryable},"
        f" other {other}, hung {hung} (slowest {max(t for _, _, t in results.values()):.1f}s); leaks {leaks},"
        f" duplicated {duplicated}, unwired {unwired}"
    )
    figures = {
        "adds": len(pods),
        "adds_ok_first_try": codes.count(0),
        "adds_retryable": retryable,
        "adds_failed_other": other,
        "adds_hung": hung,
        "addresses_duplicated": duplicated,
        "pods_unwired": unwired,
        "leaks": leaks,
    }
    if outwait:
        figures["outwait_rounds_not_outwaited"] = int(retryable == 0)
    return figures


def main() -> int:
    sc = Scenario("ec2", __doc__ or "", iterations=(5, 1))
    totals: dict[str, int] = {}
    with sc.lab(nodes=1, instance_type=ITYPE, agents=True, agent_env=ENV) as lab:
        poll(lambda: ipam(lab, "node1")["totalIPs"] >= 1, 60)
        rounds = sc.iterations + 1
        for r in range(rounds):
            for k, v in one_round(lab, r, rounds, outwait=r == rounds - 1).items():
                totals[k] = totals.get(k, 0) + v
    sc.add("rounds", sc.iterations)
    sc.add("outwait_rounds", 1)
    for k, v in totals.items():
        sc.add(k, v)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
