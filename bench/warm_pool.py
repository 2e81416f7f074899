"""Warm-pool benchmark: pod churn traces replayed against the ipamd engine and a simulated EC2.

Simulated time (a virtual clock: hours replay in seconds), realistic EC2 latencies (attach 3 s, assign
0.5 s, ... see vpcnet/testing/simulated_ec2.py) and EC2-like throttling behind vpcnet's client retries. The
same engine (vpcnet.ipam.vpc.VpcAllocator) runs each mode over the same trace and reports:

  waits     assignments that found the pool empty and had to wait for EC2
  p50/p99   assignment latency (simulated seconds)
  idle      addresses held but not assigned (free + cooling), sampled every second: mean and max
  EC2 calls mutating EC2 requests made (and per 1,000 pod starts)

and, per trace, the oracle (vpcnet.ipam.warm_oracle): the least mean idle count of a pool that knows the
future and still makes no pod wait for EC2, with the same assign latency and cooldown, and (the one the
goal divides by) within the goal's call budget: 2x the default's mutating calls per 1,000 pod starts. The
oracle without a budget is printed too (warm.idle_vs_free_oracle.<trace>): it buys its low idle count with
a call per change of its pool size.

Traces (one node's pods): spread (rollouts over a 10-node cluster), bursts (every rollout on this node),
daily (a day's arrival cycle compressed into the run, with a rolling deploy at the peak).

Goals (issue 17): adaptive mode with 0 waits, mean idle <= 1.25x the oracle's, and at most 2x the mutating
EC2 calls per 1,000 pod starts of the VPC CNI's default WARM_ENI_TARGET=1.

    .venv/bin/python bench/warm_pool.py [--hours 4] [--seed 7] [--instance-type m5.2xlarge]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.cloud.throttle import Backoff
from vpcnet.ipam.checkpoint import MemoryCheckpoint
from vpcnet.ipam.interfaces import EveryPodExists, NoNetworking
from vpcnet.ipam.limits import instance_limits
from vpcnet.ipam.maxpods import max_pods
from vpcnet.ipam.types import AddressExhausted, IpamKey
from vpcnet.ipam.vpc import VpcAllocator, VpcSettings, capacity_for
from vpcnet.ipam.warm import WarmTargets
from vpcnet.ipam.warm_oracle import PodLife, budgeted_oracle, oracle
from vpcnet.testing.simulated_ec2 import DEFAULT_LATENCY, SimulatedEc2
from vpcnet.testing.virtual_time import run_virtual

MUTATING = {
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
}


@dataclass(frozen=True)
class Pod:
    arrive: float
    lifetime: float


TRACES = {"spread": "cluster", "bursts": "concentrated", "daily": "daily"}  # figure name -> older name
COOLDOWN = 30.0  # VpcSettings' default


def make_trace(hours: float, seed: int, max_live: int, scenario: str) -> list[Pod]:
    """One node's pod arrivals and lifetimes.

    spread: the node is one of 10 in a cluster where deployments of 2-40 replicas roll out (every ~2 min
      on average) and the scheduler spreads replicas over the nodes, so this node gets its binomial share
      at once; lifetimes of minutes to an hour; a trickle of single pods (jobs, restarts) in between.
    bursts: every rollout (3-12 pods) lands on this one node at once (the worst case for a pool).
    daily: the shape of a recorded day (a night trough at a fifth of the midday peak) compressed into the
      run: arrivals of single pods (jobs, autoscaled replicas, lifetimes of 1-40 minutes) at a rate that
      follows the cycle, and 20 replicas of a long-running service (scaled up one a minute at the start);
      at the peak a rolling deploy replaces them, 5 at a time (maxSurge 25%), each old pod ending as its
      replacement is ready (~15 s later).
    The live count stays under max_live, as a scheduler keeps it under the node's capacity.
    """
    rng = random.Random(seed)
    end = hours * 3600
    pods = daily_pods(rng, end) if scenario == "daily" else rollout_pods(rng, end, scenario)
    pods.sort(key=lambda p: p.arrive)
    kept: list[Pod] = []
    for p in pods:  # the scheduler's view: skip pods that would exceed the node's capacity
        live = sum(1 for q in kept if q.arrive <= p.arrive < q.arrive + q.lifetime + 2)
        if live < max_live:
            kept.append(p)
    return kept


def daily_pods(rng: random.Random, end: float) -> list[Pod]:
    pods: list[Pod] = []
    t = 0.0
    while t < end:  # thinning: a Poisson process at the peak rate, kept with the cycle's share
        t += rng.expovariate(1 / 12)
        share = 0.2 + 0.8 * (1 - math.cos(2 * math.pi * t / end)) / 2
        if rng.random() < share:
            pods.append(Pod(t, rng.choice([60, 300, 600, 1200, 2400]) * rng.uniform(0.7, 1.3)))
    replicas, surge, ready = 20, 5, 15.0
    deploy = end / 2
    for i in range(replicas):  # the old version, scaled up one a minute; ends when its replacement is ready
        wave, arrive = i // surge, 60.0 * (i + 1)
        pods.append(Pod(arrive, deploy + wave * ready + ready + rng.uniform(0, 1) - arrive))
    for i in range(replicas):
        wave = i // surge
        arrive = deploy + wave * ready + rng.uniform(0, 1)
        pods.append(Pod(arrive, end - arrive))
    return pods


def rollout_pods(rng: random.Random, end: float, scenario: str) -> list[Pod]:
    pods: list[Pod] = []
    t = 0.0
    while t < end:
        if scenario == "spread":
            t += rng.expovariate(1 / 120)
            replicas = rng.randint(2, 40)
            size = sum(1 for _ in range(replicas) if rng.random() < 0.1)
        else:
            t += rng.expovariate(1 / 240)
            size = rng.randint(3, 12)
        life = rng.choice([300, 600, 1200, 2400, 3600]) * rng.uniform(0.7, 1.3)
        for _ in range(size):
            pods.append(Pod(t + rng.uniform(0, 2), life * rng.uniform(0.9, 1.1)))
    t = 0.0
    while t < end:
        t += rng.expovariate(1 / 45)
        pods.append(Pod(t, rng.expovariate(1 / 600) + 30))
    return pods


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    waits: int = 0
    refused: int = 0
    idle: list[int] = field(default_factory=list)
    ec2_mutating: int = 0
    enis_created: int = 0


async def replay(name: str, targets: WarmTargets, trace: list[Pod], itype: str, hours: float) -> Result:
    limits = instance_limits(itype)
    ec2 = SimulatedEc2(
        throttle_rate=5.0, throttle_burst=20.0, client_backoff=Backoff(0.2, 20.0, 10), client_rate=10.0
    )
    subnet = ec2.add_subnet("10.0.0.0/20")
    node = ec2.node_info(ec2.launch(itype, subnet.id).id)
    cap = capacity_for(
        instance_type=itype, type_max_enis=limits.enis_on_default_card, ipv4_per_eni=limits.ipv4_per_eni,
        max_pods=max_pods(limits), prefix_delegation=False, custom_networking=False, max_eni=None,
    )  # fmt: skip
    a = VpcAllocator(
        ec2=ec2, node=node, capacity=cap, settings=VpcSettings(targets=targets, assign_wait=120.0),
        networking=NoNetworking(), checkpoint=MemoryCheckpoint(), pods=EveryPodExists(),
    )  # fmt: skip
    await a.start()
    await asyncio.sleep(120)  # the node starts up before pods are scheduled to it
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = Result(name)

    async def pod(i: int, p: Pod) -> None:
        await asyncio.sleep(max(0.0, t0 + p.arrive - loop.time()))
        key = IpamKey("aws-cni", f"c{i}", "eth0")
        start = loop.time()
        waited_before = a.counters.waited_for_ec2
        try:
            await a.assign(key, "bench", f"p{i}")
        except AddressExhausted:
            res.refused += 1
            return
        res.latencies.append(loop.time() - start)
        if a.counters.waited_for_ec2 > waited_before and loop.time() > start:
            res.waits += 1
        await asyncio.sleep(p.lifetime)
        await a.release(key)

    async def sample() -> None:
        while True:
            s = a.stats()
            res.idle.append(s.total - s.assigned)
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    mutating_before = sum(1 for c in ec2.calls if c in MUTATING)
    await asyncio.gather(*(pod(i, p) for i, p in enumerate(trace)))
    sampler.cancel()
    res.ec2_mutating = sum(1 for c in ec2.calls if c in MUTATING) - mutating_before
    res.enis_created = a.counters.enis_created
    await a.stop()
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def calls_per_1k(r: Result) -> float:
    return 1000 * r.ec2_mutating / max(1, len(r.latencies))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--instance-type", default="m5.2xlarge")
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated, of: " + ", ".join(TRACES))
    args = ap.parse_args()
    limits = instance_limits(args.instance_type)
    modes = [
        ("VPC CNI default WARM_ENI_TARGET=1", WarmTargets(warm_eni=1)),
        ("WARM_IP_TARGET=5 MINIMUM_IP_TARGET=5", WarmTargets(warm_ip=5, minimum_ip=5)),
        ("vpcnet adaptive (arrival-rate sized)", WarmTargets(adaptive=True)),
    ]
    print(
        f"{args.instance_type}: {limits.enis_on_default_card} ENIs x {limits.ipv4_per_eni - 1} addresses;"
        " simulated EC2: attach 3 s, assign 0.5 s, throttle 5/s (burst 20) behind the client's retries;"
        f" {args.hours:g} h per trace, seed {args.seed}"
    )
    figs = Figures()
    cap_addresses = (limits.enis_on_default_card) * (limits.ipv4_per_eni - 1)
    lead = DEFAULT_LATENCY["AssignPrivateIpAddresses"]
    for scenario in args.traces.split(","):
        if scenario not in TRACES:
            ap.error(f"--traces: unknown trace {scenario!r} (known: {', '.join(TRACES)})")
        # the scheduler places at most ~70% of the node's pod capacity (the rest of the cluster takes the
        # overflow): a node run at its ceiling waits for cooldowns, not for EC2, in every mode
        trace = make_trace(args.hours, args.seed, int(0.7 * (max_pods(limits) - 2)), scenario)
        lives = [PodLife(p.arrive, p.arrive + p.lifetime) for p in trace]
        span = (0.0, max(life.end for life in lives))  # the replay samples until the last release
        free = oracle(lives, lead=lead, cooldown=COOLDOWN, ceiling=cap_addresses, span=span)
        floor = oracle(lives, lead=0.0, cooldown=COOLDOWN, ceiling=cap_addresses, span=span)
        print(
            f"\ntrace {scenario}: {len(trace)} pods; oracle without a call budget (knows the future, assign"
            f" lead {lead:g} s): idle mean {free.mean_idle:.2f}, of which cooling (the floor at lead 0)"
            f" {floor.mean_idle:.2f}"
        )
        print(
            f"{'mode':40} {'pods':>5} {'waits':>5} {'refused':>7} {'p50 s':>6} {'p99 s':>6}"
            f" {'idle mean':>9} {'idle max':>8} {'EC2 calls':>9} {'/1k pods':>8} {'ENIs made':>9}"
        )
        results = []
        for name, targets in modes:
            wall = time.perf_counter()
            r = run_virtual(replay(name, targets, trace, args.instance_type, args.hours))
            results.append(r)
            print(
                f"{name:40} {len(r.latencies):5d} {r.waits:5d} {r.refused:7d} {pct(r.latencies, 0.5):6.2f}"
                f" {pct(r.latencies, 0.99):6.2f} {statistics.fmean(r.idle):9.1f} {max(r.idle):8d}"
                f" {r.ec2_mutating:9d} {calls_per_1k(r):8.1f} {r.enis_created:9d}"
                f"   ({time.perf_counter() - wall:.1f} s wall)"
            )
        base, best = results[0], results[-1]
        # the goal's call budget (2x the default's calls per 1,000 pod starts) for this trace's pods
        budget = int(2 * calls_per_1k(base) * len(trace) / 1000)
        bound = budgeted_oracle(
            lives, lead=lead, cooldown=COOLDOWN, max_calls=budget, ceiling=cap_addresses, span=span
        )
        print(
            f"oracle within the goal's call budget ({budget} mutating calls, 2x the default's):"
            f" idle mean >= {bound.mean_idle:.2f} (a plan of {bound.feasible_calls} calls found:"
            f" {bound.feasible_mean_idle:.2f})"
        )
        saving = 1 - statistics.fmean(best.idle) / statistics.fmean(base.idle)
        vs_oracle = statistics.fmean(best.idle) / bound.mean_idle
        figs.add(f"warm.idle_vs_free_oracle.{scenario}", statistics.fmean(best.idle) / free.mean_idle)
        calls = calls_per_1k(best) / calls_per_1k(base)
        figs.add(f"{TRACES[scenario]}_adaptive_idle_saving", saving)
        figs.add(f"{TRACES[scenario]}_adaptive_waits", best.waits)
        figs.add(f"warm.idle_vs_oracle.{scenario}", vs_oracle)
        figs.add(f"warm.waits.{scenario}", best.waits)
        figs.add(f"warm.ec2_calls_vs_default.{scenario}", calls)
        print(
            f"adaptive: {saving:.0%} fewer idle addresses than WARM_ENI_TARGET=1,"
            f" {vs_oracle:.2f}x the oracle's"
            f" (goal <= 1.25: {'MET' if vs_oracle <= 1.25 else 'NOT MET'}), waits {best.waits}"
            f" (goal 0: {'MET' if best.waits == 0 else 'NOT MET'}), mutating EC2 calls per pod start"
            f" {calls:.2f}x the default's (goal <= 2: {'MET' if calls <= 2 else 'NOT MET'})"
        )
    figs.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
