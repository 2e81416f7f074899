"""Fault: the datastore (the lab's etcd) stopped and restarted while policy changes are being made.

Pods ds/a and ds/c on node1, ds/b on node2; a policy denies all ingress to b for the whole run. Each round,
with a prober sampling the TCP matrix between the pods all along:
  1. a policy "only a may reach c" is applied and, before the agents can have it, etcd is stopped (SIGTERM);
  2. for DOWN_S seconds the datastore is down (further applies fail, and are counted);
  3. etcd is started again with the same data and ports; at once a policy denying all ingress to a is applied
     (retried until the API takes it);
  4. the round ends when the probed matrix equals what the policy engine says for the final policies.
Figures:
  seconds_reachable_against_policy  the sampled time in which some pair was reachable that every policy state
                                    of the round denies (b from anyone, always): must be 0
  converge_s                        the worst round's time from etcd's restart to the final policies enforced
Run as root: `python faults/datastore_restart.py [--quick]`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import Scenario, log, poll
from lab_fixture import LabCli, pod_doc

from vpcnet.api import load_documents
from vpcnet.cli.labprobe import disagreements, expected_matrix, probe_endpoints
from vpcnet.cli.main import app
from vpcnet.lab import labetcd, procs
from vpcnet.lab.probe import probe_matrix

DOWN_S = 6.0
PODS = (("a", "node1"), ("b", "node2"), ("c", "node1"))
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ds}\n"


def ingress_policy(name: str, target: str, sources: str | None) -> str:
    """A NetworkPolicy on pod=target allowing ingress only from pod=sources (None: from nobody)."""
    rules = f"ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: {sources}}}}}}}]}}]" if sources else ""
    return (
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ds}}\n"
        f"spec:\n  podSelector: {{matchLabels: {{pod: {target}}}}}\n  policyTypes: [Ingress]\n"
        + (f"  {rules}\n" if rules else "")
    )


DENY_B = ingress_policy("deny-b", "b", None)
ONLY_A_TO_C = ingress_policy("only-a-to-c", "c", "a")
DENY_A = ingress_policy("deny-a", "a", None)


class Sampler(threading.Thread):
    """Probes the TCP matrix over and over; keeps (start, end, matrix) of each sample."""

    def __init__(self, endpoints: list[Any]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.samples: list[tuple[float, float, dict[str, dict[str, bool]]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            report = asyncio.run(
                probe_matrix(self.endpoints, self.endpoints, 80, "TCP", timeout=0.5, attempts=1)
            )
            self.samples.append((start, time.monotonic(), report.matrix()))


def engine(docs: str, refs: list[str]) -> dict[str, dict[str, bool]]:
    return expected_matrix(load_documents(docs, "datastore_restart.yaml"), refs, 80, "TCP")


def stop_etcd(layout: Any) -> tuple[str, list[str]]:
    """Stop etcd (SIGTERM, as a service manager would); returns its client URL and its command line, to start
    it again the same way (same data dir and ports)."""
    pid_file = labetcd.pid_file(layout)
    pid = int(pid_file.read_text().split()[0])
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    url = argv[argv.index("--listen-client-urls") + 1]
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not os.path.exists(f"/proc/{pid}"), 20, 0.1)
    return url, argv


def applied(cli: LabCli, path: Path) -> bool:
    """`vpcnet apply -f path`; False if it was refused (the datastore down)."""
    return cli.runner.invoke(app, ["apply", "-f", str(path), "--prefix", cli.lab.prefix]).exit_code == 0


def main() -> int:
    sc = Scenario("datastore_restart", __doc__ or "", iterations=(5, 1))
    against = 0.0
    worst = 0.0
    failed_applies = 0
    with sc.lab(nodes=2, instance_type="t3.medium", agents=True) as lab, tempfile.TemporaryDirectory() as tmp:
        cli = LabCli(lab, Path(tmp))
        pods = "---\n".join(pod_doc(name, node, "ds") for name, node in PODS)
        cli.apply(NAMESPACE + "---\n" + pods, "pods.yaml")
        cli.apply(DENY_B, "deny-b.yaml")
        endpoints = [e for e in probe_endpoints(lab.layout) if e.name.startswith("ds/")]
        refs = sorted(e.name for e in endpoints)
        base = NAMESPACE + "---\n" + pods + "---\n" + DENY_B
        states = [engine(base, refs), engine(base + "---\n" + ONLY_A_TO_C, refs)]
        final_docs = base + "---\n" + ONLY_A_TO_C + "---\n" + DENY_A
        final = engine(final_docs, refs)
        states.append(final)
        never = {(s, d) for s in refs for d in refs if s != d and not any(m[s][d] for m in states)}
        log(f"pods {refs}; pairs every policy state denies: {sorted(never)}")
        for r in range(sc.iterations):
            sampler = Sampler(endpoints)
            sampler.start()
            time.sleep(1.0)
            (Path(tmp) / "c.yaml").write_text(ONLY_A_TO_C)
            cli.cli("apply", "-f", str(Path(tmp) / "c.yaml"))
            url, argv = stop_etcd(lab.layout)
            log(f"round {r + 1}: etcd stopped")
            down_until = time.monotonic() + DOWN_S
            while time.monotonic() < down_until:
                failed_applies += not applied(cli, Path(tmp) / "c.yaml")
                time.sleep(1.0)
            procs.spawn(argv, log_file=labetcd.log_file(lab.layout), pid_file=labetcd.pid_file(lab.layout))
            restarted = time.monotonic()
            labetcd.wait_healthy(lab.layout, url)
            log(f"round {r + 1}: etcd started again")
            (Path(tmp) / "a.yaml").write_text(DENY_A)
            poll(lambda: applied(cli, Path(tmp) / "a.yaml"), 120, 0.5)

            def converged() -> bool:
                report = asyncio.run(probe_matrix(endpoints, endpoints, 80, "TCP", attempts=2))
                return not disagreements(report.matrix(), final, ignore_loopback=True)

            ok = poll(converged, 180, 0.2)
            took = time.monotonic() - restarted
            worst = max(worst, took if ok else float("inf"))
            sampler.stop.set()
            sampler.join(60)
            bad = 0.0
            for i, (start, end, matrix) in enumerate(sampler.samples):
                reached = sorted((s, d) for s, d in never if matrix.get(s, {}).get(d))
                if reached:
                    previous_end = sampler.samples[i - 1][1] if i else start
                    bad += end - previous_end
                    log(f"  reachable against policy at +{start - restarted:.1f}s: {reached}")
            against += bad
            log(
                f"round {r + 1}/{sc.iterations}: converged {ok} {took:.1f}s after the restart;"
                f" {len(sampler.samples)} samples, {bad:.1f}s reachable against policy"
            )
            cli.cli("delete", "-f", str(Path(tmp) / "a.yaml"))
            cli.cli("delete", "-f", str(Path(tmp) / "c.yaml"))
            cli.cli("lab", "wait", "--timeout", "120")
    sc.add("rounds", sc.iterations)
    sc.add("seconds_reachable_against_policy", against)
    sc.add("converge_s", worst)
    sc.add("applies_refused_while_down", failed_applies)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
