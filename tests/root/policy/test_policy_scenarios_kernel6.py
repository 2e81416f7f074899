"""The policy scenarios (the 48 upstream NetworkPolicy e2e cases, vpcnet's own and the Calico ones) on IPv6
pods and on dual-stack pods, enforced by the kernel on one node with real TCP, UDP and SCTP packets, each
stack on one back end; every probed pair is checked against the files' cells and against the policy engine.

The pods are wired as Calico mode wires them, and the node runs the planes the agent runs for them
(agent/policy_family.calico_planes): IPv6-only pods an IPv6 plane and an IPv4 one with no addresses; dual-
stack pods a plane per family. A pod's IPv6 address carries its IPv4 one in its low 32 bits
(`embedded_ipv6`), so the files' ipBlocks, written in IPv6 (vpcnet/policy/scenarios.py), cover the same pods
and the cells hold as written. Dual-stack pods are also probed over IPv4, where those IPv6 blocks must match
nothing: there the engine is the reference (and the cases of ipblock_family.yaml and dual/dual_stack.yaml
state both families' cells).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path

import policy_netkit as netkit
import pytest
from scenario_feed import Feeder

from vpcnet.api.core import Pod
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.policy_backend import BACKENDS, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.policy.evaluate import Flow, endpoint_in_family, evaluate
from vpcnet.policy.model import protocol_from_text
from vpcnet.policy.scenarios import ScenarioCheck, Topology, embedded_ipv6, load_scenarios
from vpcnet.policy.state import ClusterState

pytestmark = [pytest.mark.root, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2] / "data" / "netpol"
Matrix = dict[str, dict[str, bool]]


def engine_matrix(check: ScenarioCheck, refs: list[str], version: int) -> Matrix:
    """The policy engine's verdict for every pair, between the pods' addresses of one family."""
    state = ClusterState.from_resources(check.resources)
    number = protocol_from_text(check.protocol)
    at = {ref: endpoint_in_family(state, ref, version) for ref in refs}
    return {
        s: {d: evaluate(state, Flow(at[s], at[d], number, check.port)).allowed for d in refs if d != s}
        for s in refs
    }


def measured(probe: Callable[[], Matrix], want: Matrix) -> Matrix:
    """The kernel's matrix; a missed allowed cell (a loaded machine) is probed again, a pass is proof."""
    got = probe()
    for _ in range(2):
        if all(got[s][d] or not want[s][d] for s in got for d in got[s]):
            break
        again = probe()
        got = {s: {d: got[s][d] or again[s][d] for d in row} for s, row in got.items()}
    return got


def _no_addresses(pod: Pod) -> tuple[str, ...]:
    return ()


# Each back end once per stack, the other one in the labs (test_policy_scenarios_lab.py: a VPC-mode IPv6 lab
# with nftables, a Calico dual-stack lab with iptables), to keep the time in bounds.
@pytest.mark.parametrize(("stack", "backend"), list(zip(("ipv6", "dual"), BACKENDS, strict=True)))
def test_scenarios_over_ipv6_with_real_packets(stack: str, backend: str) -> None:
    dual = stack == "dual"
    topo = Topology()
    with netkit.node() as node:
        pods: dict[str, netkit.Pod] = {}
        addresses: dict[str, list[str]] = {}
        for i, ns in enumerate(topo.namespaces):
            for j, name in enumerate(topo.pods):
                v4 = f"10.77.{i + 1}.{j + 10}"  # one /24 per namespace, as the files' blocks assume
                v6 = embedded_ipv6(v4)
                pod = node.add_pod(name, k8s_namespace=ns, ip=v4 if dual else None, ip6=v6, ipv4=dual)
                pod.name = f"{ns}/{name}"
                pods[pod.name] = pod
                addresses[pod.name] = [v6, v4] if dual else [v6]  # the files' addresses: IPv6
        families = (6, 4) if dual else (6,)
        checks = load_scenarios([DATA, DATA / "dual"] if dual else [DATA], pod_ips=addresses)
        checks = [c for c in checks if c.family is None or c.family in families]
        runner = SubprocessRunner(node.netns)
        v4_addresses = None if dual else _no_addresses
        calcs = [
            PolicyCalculator("n1", ["eni"], family=IpFamily.V6),
            PolicyCalculator("n1", ["eni"], family=IpFamily.V4, local_addresses=v4_addresses),
        ]
        planes = [make_dataplane(backend, runner, calc.family) for calc in calcs]
        feeder = Feeder(calcs)
        refs = list(pods)
        failures = []
        probed = blocked = 0
        for check in checks:
            feeder.feed(check.resources)
            for calc, plane in zip(calcs, planes, strict=True):
                asyncio.run(plane.apply(calc.desired()))
            for version in families if check.family is None else (check.family,):
                engine = engine_matrix(check, refs, version)
                cells = check.probe_family == version
                want = (
                    {s: {d: check.expected[s][d] for d in row} for s, row in engine.items()}
                    if cells
                    else engine
                )

                probe = partial(netkit.probe_matrix, list(pods.values()), check.port, check.protocol)
                got = measured(partial(probe, version=version), want)
                probed += 1
                blocked += sum(not ok for row in got.values() for ok in row.values())
                where = f"{check.source} [{check.name} {check.protocol}/{check.port} over IPv{version}]"
                if cells and want != engine:
                    failures.append(f"{where}: the engine differs from the cells")
                wrong = [
                    f"{s}->{d}: kernel {'allows' if got[s][d] else 'blocks'}, want {want[s][d]}"
                    for s in refs
                    for d in refs
                    if s != d and got[s][d] != want[s][d]
                ]
                if wrong:
                    failures.append(f"{where}: {wrong}")
        assert not failures, f"{len(failures)} of {probed} matrices differ:\n" + "\n".join(failures)
        upstream = {c.source for c in checks if "upstream_" in c.source}
        assert len(upstream) == 48 and blocked > probed  # the agreement is not "everything open"
