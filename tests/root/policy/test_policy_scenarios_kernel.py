"""The policy engine's scenarios (the 48 upstream NetworkPolicy e2e cases and the Calico ones), enforced by
the kernel data plane on one node and checked with real TCP, UDP and SCTP packets, for both back ends.

The nine pods x/a .. z/c live in their own netns on veths named as the CNI names them; the scenarios'
resources are fed to the calculation one check after another, so every check after the first is an
incremental change of the previous state (policies added, replaced, deleted; labels changed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import policy_netkit as netkit
import pytest
from scenario_feed import Feeder

from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.policy_backend import BACKENDS, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.policy.scenarios import Topology, load_scenarios

pytestmark = pytest.mark.root

DATA = Path(__file__).resolve().parents[2] / "data" / "netpol"


@pytest.mark.parametrize("backend", BACKENDS)
def test_scenarios_with_real_packets(backend: str) -> None:
    topo = Topology()
    with netkit.node() as node:
        pods: dict[str, netkit.Pod] = {}
        # One /24 per namespace, as the scenarios' ipBlocks assume (x: 10.77.1.0/24, y: 10.77.2.0/24, ...).
        for i, ns in enumerate(topo.namespaces):
            for j, name in enumerate(topo.pods):
                pod = node.add_pod(name, k8s_namespace=ns, ip=f"10.77.{i + 1}.{j + 10}")
                pod.name = f"{ns}/{name}"
                pods[pod.name] = pod
        # The checks over IPv4 (those for IPv6 need pods of both families: test_policy_scenarios_kernel6).
        checks = load_scenarios([DATA], pod_ips={ref: p.ip for ref, p in pods.items()})
        checks = [c for c in checks if c.probe_family == 4]
        feeder = Feeder([PolicyCalculator("n1", ["eni"])])
        dataplane = make_dataplane(backend, SubprocessRunner(node.netns))
        failures = []
        for check in checks:
            feeder.feed(check.resources)
            asyncio.run(dataplane.apply(feeder.calc.desired()))
            got = netkit.probe_matrix(list(pods.values()), check.port, check.protocol)
            for _ in range(2):  # a missed allowed cell (a loaded machine) is probed again; a pass is proof
                if all(got[s][d] or not exp for s, d, exp in check.expected_cells() if s != d):
                    break
                again = netkit.probe_matrix(list(pods.values()), check.port, check.protocol)
                got = {s: {d: got[s][d] or again[s][d] for d in row} for s, row in got.items()}
            wrong = [
                f"{s}->{d} expected {'allow' if exp else 'deny'}"
                for s, d, exp in check.expected_cells()
                if s != d and got[s][d] != exp
            ]
            if wrong:
                failures.append(f"{check.source} [{check.name} {check.protocol}/{check.port}]: {wrong}")
        assert not failures, f"{len(failures)} of {len(checks)} checks differ:\n" + "\n".join(failures)
