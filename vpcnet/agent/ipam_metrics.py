"""Prometheus metrics of the VPC address manager, with the VPC CNI's awscni_* names where they mean the same.

Pool gauges are read from the allocator at scrape time (never stale); EC2 call latency and errors are
recorded as calls happen (the cloud client's observer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Summary
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vpcnet.ipam.vpc import VpcAllocator


def vpc_cni_exposition(text: bytes) -> bytes:
    """The awscni_* families as the VPC CNI (Prometheus' Go client) exposes them.

    prometheus_client names a counter's sample `<name>_total` and adds `<name>_created` samples; the Go
    client does neither, and dashboards and cni-metrics-helper query `awscni_add_ip_req_count`, not
    `awscni_add_ip_req_count_total`. Other families (vpcnet_*) are left as they are."""
    lines = text.decode().splitlines()
    renamed: dict[str, str] = {}  # exposed name -> the VPC CNI's name
    families: set[str] = set()  # awscni_* counters, summaries and histograms (they get _created samples)
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"] and parts[2].startswith("awscni_"):
            name, kind = parts[2], parts[3]
            if kind == "counter" and name.endswith("_total"):
                renamed[name] = name.removesuffix("_total")
                families.add(renamed[name])
            elif kind in ("summary", "histogram"):
                families.add(name)
    out = []
    for line in lines:
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2].endswith("_created") and parts[2][:-8] in families:
                continue
            if len(parts) >= 3 and parts[2] in renamed:
                parts[2] = renamed[parts[2]]
            out.append(" ".join(parts))
            continue
        name, sep, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else line.partition(" ")
        if name.endswith("_created") and name.removesuffix("_created") in families:
            continue
        out.append(renamed.get(name, name) + sep + rest)
    return ("\n".join(out) + "\n").encode() if out else b""


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Summary(
            "awscni_aws_api_latency_ms",
            "AWS API call latency in ms",
            ["api", "error", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "awscni_aws_api_error_count", "AWS API errors", ["api", "error"], registry=registry
        )
        self.requests = Counter("awscni_ec2api_req_count", "EC2 API requests", ["fn"], registry=registry)
        self.request_errors = Counter(
            "awscni_ec2api_error_count", "EC2 API errors", ["fn"], registry=registry
        )

    def observe(self, api: str, seconds: float, error: str | None, status: int) -> None:
        self.latency.labels(api, "true" if error else "false", str(status)).observe(seconds * 1000)
        self.requests.labels(api).inc()
        if error:
            self.errors.labels(api, error).inc()
            self.request_errors.labels(api).inc()


class PoolCollector:
    def __init__(self, allocator: VpcAllocator) -> None:
        self.a = allocator

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        a = self.a
        s = a.stats()
        c = a.counters
        cap = a.capacity

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield gauge("awscni_total_ip_addresses", "addresses in the pool", s.total)
        yield gauge("awscni_assigned_ip_addresses", "addresses assigned to pods", s.assigned)
        yield gauge("vpcnet_cooling_ip_addresses", "released addresses in their cooldown", s.cooling)
        yield gauge("vpcnet_target_ip_addresses", "addresses the warm pool aims for", a.target())
        yield gauge("awscni_eni_allocated", "ENIs attached and managed", s.enis)
        yield gauge("awscni_eni_max", "ENIs this node may have", cap.max_enis)
        yield gauge("awscni_ip_max", "addresses this node may hold for pods", cap.address_ceiling)
        yield gauge("awscni_total_ipv4_prefixes", "/28 prefixes in the pool", s.prefixes)
        yield counter(
            "awscni_no_available_ip_addresses", "assignments that found no free address", c.no_available
        )
        yield counter("vpcnet_assign_waited_for_ec2", "assignments that waited for EC2", c.waited_for_ec2)
        yield counter("vpcnet_address_exhausted", "assignments refused: no address", c.exhausted)
        yield counter("awscni_add_ip_req_count", "address assignments", c.assigns)
        del_count = CounterMetricFamily("awscni_del_ip_req_count", "address releases", labels=["reason"])
        del_count.add_metric(["PodDeleted"], c.releases)
        yield del_count
        yield counter("awscni_force_removed_ips", "assigned addresses EC2 took away", c.force_removed_ips)
        yield counter("vpcnet_enis_created", "ENIs created and attached", c.enis_created)
        yield counter("vpcnet_enis_freed", "ENIs detached and deleted", c.enis_deleted)
        yield counter("vpcnet_leaked_enis_deleted", "unattached ENIs of ours deleted", c.leaked_enis_deleted)
        per_eni = GaugeMetricFamily(
            "awscni_assigned_ip_per_eni", "addresses assigned per ENI", labels=["eni"]
        )
        for eni_id in a.pool.enis:
            n = sum(1 for sl in a.pool.slots.values() if sl.eni_id == eni_id and sl.key is not None)
            per_eni.add_metric([eni_id], n)
        yield per_eni
        busy = GaugeMetricFamily("awscni_ipamd_action_inprogress", "EC2 actions in progress", labels=["fn"])
        for fn, n in a.in_progress.items():
            busy.add_metric([fn], n)
        yield busy
        errs = CounterMetricFamily("awscni_ipamd_error_count", "pool actions that failed", labels=["fn"])
        for fn, n in a.counters.ec2_errors.items():
            errs.add_metric([fn], n)
        yield errs
