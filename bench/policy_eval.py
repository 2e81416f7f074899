"""Benchmark: the full reachability matrix for 1,000 pods and 500 policies (goal: under 2 s here).

The cluster is synthetic but shaped like a real one, and fixed by a seed: 25 namespaces labelled
team/env, 40 pods each with app/tier/version labels and named container ports; 350 Kubernetes
NetworkPolicies (pod, namespace and combined selectors with In/NotIn/Exists, ipBlocks with except,
numeric, named and endPort ports, ingress and egress) and 150 Calico policies (namespaced and global,
three tiers with Allow/Deny/Pass/Log rules, starts-with / not-in selectors, nets, notPorts).

Reference measured in the same run: the per-flow evaluator (vpcnet.policy.evaluate, which walks
tiers/policies/rules for one flow like a packet would, without indexing) on a random sample of
flows, extrapolated to all 1,000,000 pairs. The sample also checks that both agree cell by cell.

Build + matrix is reported as wall-clock time and as this process's CPU time; compare trees by the CPU
figure when the machine is loaded.

Run: `python bench/policy_eval.py [--pods 1000] [--policies 500] [--sample 3000] [--seed 7]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.api.base import ObjectMeta, Resource
from vpcnet.api.calico import CalicoNetworkPolicy, CalicoRule, EntityRule, GlobalNetworkPolicy, Tier
from vpcnet.api.core import Container, ContainerPort, Namespace, Pod
from vpcnet.api.networking import (
    IPBlock,
    K8sNetworkPolicy,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
)
from vpcnet.policy.evaluate import Flow, endpoint, evaluate
from vpcnet.policy.matrix import reachability
from vpcnet.policy.state import ClusterState

APPS = [f"app{i}" for i in range(20)]
TIERS = ["web", "api", "db", "cache"]
TEAMS = ["red", "blue", "green", "gold", "teal"]


def build_cluster(n_pods: int, n_policies: int, rng: random.Random) -> list[Resource]:
    n_ns = max(1, n_pods // 40)
    out: list[Resource] = []
    namespaces = [f"ns{i:02d}" for i in range(n_ns)]
    for i, ns in enumerate(namespaces):
        out.append(Namespace.named(ns, {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 3 else "dev"}))
    for i in range(n_pods):
        ns = namespaces[i % n_ns]
        labels = {"app": rng.choice(APPS), "tier": rng.choice(TIERS), "version": f"v{rng.randint(1, 3)}"}
        if rng.random() < 0.2:
            labels["canary"] = "true"
        ports = [ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics")]
        if rng.random() < 0.3:
            ports = [ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", "dns")]
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        out.append(
            Pod(
                ObjectMeta(name=f"pod{i:04d}", namespace=ns, labels=labels),
                [Container("c", ports)],
                pod_ips=[ip],
            )
        )
    n_k8s = n_policies * 7 // 10
    for i in range(n_k8s):
        out.append(_k8s_policy(i, rng.choice(namespaces), rng, n_pods))
    out.append(Tier(ObjectMeta(name="security"), order=100, default_action="Pass"))
    out.append(Tier(ObjectMeta(name="platform"), order=200, default_action="Deny"))
    for i in range(n_policies - n_k8s):
        out.append(_calico_policy(i, rng.choice(namespaces), rng, n_pods))
    return out


def _selector(rng: random.Random) -> LabelSelector:
    choice = rng.randint(0, 4)
    if choice == 0:
        return LabelSelector.of({"app": rng.choice(APPS)})
    if choice == 1:
        return LabelSelector.of({"tier": rng.choice(TIERS)})
    if choice == 2:
        return LabelSelector.of(None, LabelSelectorRequirement("app", "In", tuple(rng.sample(APPS, 3))))
    if choice == 3:
        return LabelSelector.of(
            {"tier": rng.choice(TIERS)}, LabelSelectorRequirement("canary", "DoesNotExist")
        )
    return LabelSelector.of(None, LabelSelectorRequirement("version", "NotIn", ("v1",)))


def _cidr(rng: random.Random, n_pods: int) -> IPBlock:
    i = rng.randrange(n_pods)
    base = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.0"
    return IPBlock(f"{base}/24", (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32",))


def _k8s_policy(i: int, ns: str, rng: random.Random, n_pods: int) -> K8sNetworkPolicy:
    def rule() -> NetworkPolicyRule:
        peers: list[NetworkPolicyPeer] = []
        for _ in range(rng.randint(1, 3)):
            kind = rng.randint(0, 3)
            if kind == 0:
                peers.append(NetworkPolicyPeer(pod_selector=_selector(rng)))
            elif kind == 1:
                peers.append(
                    NetworkPolicyPeer(namespace_selector=LabelSelector.of({"team": rng.choice(TEAMS)}))
                )
            elif kind == 2:
                peers.append(
                    NetworkPolicyPeer(
                        pod_selector=_selector(rng),
                        namespace_selector=LabelSelector.of({"env": rng.choice(["prod", "dev"])}),
                    )
                )
            else:
                peers.append(NetworkPolicyPeer(ip_block=_cidr(rng, n_pods)))
        ports: list[NetworkPolicyPort] = []
        kind = rng.randint(0, 3)
        if kind == 0:
            ports = [NetworkPolicyPort("TCP", 8080)]
        elif kind == 1:
            ports = [NetworkPolicyPort("TCP", "http")]
        elif kind == 2:
            ports = [NetworkPolicyPort("TCP", 8000, 8100), NetworkPolicyPort("UDP", 53)]
        return NetworkPolicyRule(tuple(peers), tuple(ports))

    ingress = tuple(rule() for _ in range(rng.randint(0, 2)))
    egress = tuple(rule() for _ in range(rng.randint(0, 1)))
    types = ("Ingress", "Egress") if egress or rng.random() < 0.2 else ("Ingress",)
    return K8sNetworkPolicy(
        ObjectMeta(name=f"knp{i:03d}", namespace=ns), _selector(rng), ingress, egress, types
    )


def _calico_policy(i: int, ns: str, rng: random.Random, n_pods: int) -> Resource:
    def entity() -> EntityRule:
        kind = rng.randint(0, 3)
        if kind == 0:
            return EntityRule(selector=f"app in {{'{rng.choice(APPS)}', '{rng.choice(APPS)}'}}")
        if kind == 1:
            return EntityRule(
                selector="tier starts with 'ca'", namespace_selector=f"team != '{rng.choice(TEAMS)}'"
            )
        if kind == 2:
            return EntityRule(nets=(_cidr(rng, n_pods).cidr,))
        return EntityRule(not_selector="has(canary)")

    def rule() -> CalicoRule:
        action = rng.choice(["Allow", "Allow", "Deny", "Pass", "Log"])
        if rng.random() < 0.5:
            return CalicoRule(
                action, protocol=6, source=entity(), destination=EntityRule(ports=(8080, (9000, 9100)))
            )
        return CalicoRule(action, source=entity(), destination=EntityRule(not_ports=()))

    tier = rng.choice(["default", "security", "platform"])
    order = float(rng.randint(1, 2000))
    selector = rng.choice(
        [f"app == '{rng.choice(APPS)}'", f"tier == '{rng.choice(TIERS)}'", "version not in {'v3'}"]
    )
    ingress = tuple(rule() for _ in range(rng.randint(1, 3)))
    egress = tuple(rule() for _ in range(rng.randint(0, 1)))
    types = ("Ingress", "Egress") if egress else ("Ingress",)
    if rng.random() < 0.7:
        return CalicoNetworkPolicy(
            ObjectMeta(name=f"cnp{i:03d}", namespace=ns), tier, order, selector, types, ingress, egress
        )
    return GlobalNetworkPolicy(ObjectMeta(name=f"gnp{i:03d}"), tier, order, selector, types, ingress, egress)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--sample", type=int, default=3000, help="flows for the per-flow reference")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--goal", type=float, default=2.0, help="seconds for the full matrix")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    resources = build_cluster(args.pods, args.policies, rng)

    # CPU time beside the wall clock: on a loaded machine the wall clock is mostly the wait for a core (it
    # varied 0.16-1.95 s between interleaved runs of the same code), so two trees compare by the CPU figure.
    c0, t0 = time.process_time(), time.perf_counter()
    state = ClusterState.from_resources(resources)
    t1 = time.perf_counter()
    matrix = reachability(state, 8080, 6)
    t2, c2 = time.perf_counter(), time.process_time()
    as_dict = matrix.to_dict()
    t3 = time.perf_counter()

    n = len(state.pods)
    pairs = n * n
    sample = [(rng.randrange(n), rng.randrange(n)) for _ in range(args.sample)]
    t4 = time.perf_counter()
    mismatches = 0
    for s, d in sample:
        src, dst = state.pods[s], state.pods[d]
        verdict = evaluate(state, Flow(endpoint(state, src), endpoint(state, dst), 6, 8080))
        if verdict.allowed != as_dict[src.ref][dst.ref]:
            mismatches += 1
    t5 = time.perf_counter()

    per_flow = (t5 - t4) / len(sample)
    naive_total = per_flow * pairs
    total = (t1 - t0) + (t2 - t1)
    print(
        f"cluster: {n} pods, {len(state.policies)} policies, {len(state.namespaces)} namespaces, "
        f"seed {args.seed}"
    )
    print(f"state build (compile policies):   {t1 - t0:8.3f} s")
    print(
        f"reachability matrix TCP/8080:      {t2 - t1:8.3f} s   ({matrix.count_allowed()} of {pairs} allowed)"
    )
    print(
        f"  build + matrix:                  {total:8.3f} s   "
        f"goal < {args.goal} s: {'MET' if total < args.goal else 'MISSED'}"
    )
    print(f"  CPU time of build + matrix:      {c2 - c0:8.3f} s   (wall above includes waiting for a core)")
    print(f"  JSON-shaped dict of all cells:   {t3 - t2:8.3f} s")
    print(f"reference, per-flow evaluator:     {per_flow * 1e6:8.1f} us/flow on {len(sample)} sampled flows")
    print(f"  extrapolated to {pairs} pairs:  {naive_total:8.1f} s")
    print(f"speed-up of the matrix over per-flow evaluation: {naive_total / (t2 - t1):.0f}x")
    print(f"sampled cells where both evaluators disagree: {mismatches}")
    figs = Figures()
    figs.add("matrix_build_s", t2 - t0)
    figs.add("matrix_build_cpu_s", c2 - c0)
    figs.add("matrix_speedup_vs_per_flow", naive_total / (t2 - t1))
    figs.add("evaluator_disagreements", mismatches)
    figs.print()
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
