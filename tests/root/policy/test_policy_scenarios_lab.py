"""The 48 upstream NetworkPolicy e2e cases in a real lab: three nodes over two AZs, the node agents'
policy component on each (both back ends), pods x/a .. z/c spread over the nodes, every check applied
through `vpcnet apply`/`delete`, `vpcnet lab wait` for convergence, then `vpcnet lab probe --compare`
(TCP, UDP, SCTP packets between every pod pair) must agree with the policy engine.

The engine, not the files' cells, is the reference here: the lab's addresses come from its pools, so the
few ipBlock cases (written for one /24 per namespace) mean something else; the engine evaluates them with
the real addresses (and the single-node kernel tests check the files' cells themselves).

Four labs, one back end each, to keep the time in bounds (the single-node kernel
tests run every scenario on both back ends): IPv4 pods in VPC mode (addresses from ENIs, veths "eni...")
with iptables and in Calico mode (pool addresses, veths "cali...", VXLAN across subnets) with nftables; IPv6
pods in VPC mode (ENABLE_IPv6: addresses from each node's /80) with nftables; dual-stack pods in Calico mode
(one address from each pool) with iptables. Over IPv6 the files' ipBlocks are written in IPv6 (the wide /4
kept, a longer prefix 96 bits more); dual-stack pods are probed over both families (`lab probe --family`),
so an IPv6 block must match nothing over IPv4; ipblock_family.yaml (and dual/dual_stack.yaml for dual-stack
pods) add the cases whose blocks are of one family and whose cells differ by family.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from vpcnet.api.base import Resource, ResourceKey
from vpcnet.api.core import Namespace, Pod
from vpcnet.cli.main import app
from vpcnet.policy.scenarios import Topology, load_scenarios

pytestmark = [pytest.mark.root, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2] / "data" / "netpol"
UPSTREAM = [DATA / "upstream_tcp.yaml", DATA / "upstream_udp_sctp.yaml"]
FAMILY_FILES = {family: [DATA / "ipblock_family.yaml"] for family in ("ipv4", "ipv6")}
FAMILY_FILES["dual"] = [DATA / "ipblock_family.yaml", DATA / "dual" / "dual_stack.yaml"]
VERSIONS = {"ipv4": (4,), "ipv6": (6,), "dual": (6, 4)}  # the families probed (the first: the files')
NODES = ("node1", "node2", "node3")  # node1 and node3 in one AZ, node2 in the other


class ScenarioLab:
    def __init__(self, lab: Any, tmp: Path, family: str) -> None:
        self.lab = lab
        self.family = family
        self.tmp = tmp
        self.runner = CliRunner()
        self.applied: dict[ResourceKey, Resource] = {}
        self.count = 0

    def cli(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        result = self.runner.invoke(app, [*args, "--prefix", self.lab.prefix])
        assert result.exit_code in ok, f"vpcnet {' '.join(args)}: {result.output}"
        return result.output

    def apply_docs(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        self.count += 1
        path = self.tmp / f"step{self.count}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        self.cli("apply", "-f", str(path))


def pod_doc(pod: Pod, node: str) -> dict[str, Any]:
    containers = [
        {
            "name": c.name,
            "image": "busybox",
            "ports": [
                {"containerPort": p.container_port, "protocol": p.protocol, "name": p.name} for p in c.ports
            ],
        }
        for c in pod.containers
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "labels": pod.metadata.labels,
        },
        "spec": {"nodeName": node, "containers": containers},
    }


def placement(ref: str) -> str:
    index = Topology().refs.index(ref)
    return NODES[index % len(NODES)]


# (mode, back end, family, datastore): both datastores run the same scenarios, and must give the same verdicts
LABS = [
    ("vpc", "iptables", "ipv4", "etcd"),
    ("calico", "nftables", "ipv4", "kubernetes"),
    ("vpc", "nftables", "ipv6", "kubernetes"),
    ("calico", "iptables", "dual", "kubernetes"),
]
FAMILY_ENV = {
    ("vpc", "ipv6"): {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"},
    ("calico", "dual"): {"ENABLE_IPv6": "true", "ENABLE_IPv4": "true"},
}


@pytest.fixture(scope="module", params=LABS, ids="-".join)
def scenario_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScenarioLab]:
    from lab_fixture import running_lab

    mode, backend, family, datastore = request.param
    veth_prefix = "eni" if mode == "vpc" else "cali"
    env = {"VPCNET_POLICY_BACKEND": backend, **FAMILY_ENV.get((mode, family), {})}
    if mode == "calico":
        env.update(
            {
                "VPCNET_MODE": "calico",
                "AWS_VPC_K8S_CNI_VETHPREFIX": "cali",
                "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
                "CALICO_IPV4POOL_VXLAN": "CrossSubnet",
            }
        )
    with running_lab(
        nodes=3, azs=2, agents=True, agent_env=env, ip_family=family, datastore=datastore
    ) as lab:
        for node in lab.node_names:
            args = [
                "install-cni",
                "--bin-dir", str(lab.layout.cni_bin_dir(node)),
                "--conf-dir", str(lab.layout.cni_conf_dir(node)),
                "--socket", str(lab.layout.agent_socket(node)),
                "--veth-prefix", veth_prefix,
                "--timeout", "60",
            ]  # fmt: skip
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, f"install-cni on {node}: {result.output}"
        handle = ScenarioLab(lab, tmp_path_factory.mktemp(f"scenarios-{mode}-{backend}-{family}"), family)
        base = Topology().resources()
        docs = [r.to_dict() for r in base if isinstance(r, Namespace)]
        docs += [
            pod_doc(r, placement(f"{r.metadata.namespace}/{r.metadata.name}"))
            for r in base
            if isinstance(r, Pod)
        ]
        handle.apply_docs(docs)
        handle.cli("lab", "wait", "--timeout", "60")
        yield handle


def pod_addresses(scenario_lab: ScenarioLab) -> dict[str, list[str]]:
    """Every pod's addresses, the family the files are written in first."""
    rows = json.loads(scenario_lab.cli("lab", "pods", "-o", "json"))
    assert len(rows) == 9 and all(row["ip"] for row in rows), rows
    assert {row["node"] for row in rows} == set(NODES)
    first = VERSIONS[scenario_lab.family][0]
    out = {}
    for row in rows:
        body = json.loads(scenario_lab.cli("get", "pod", row["pod"], "-o", "json"))
        ips = [entry["ip"] for entry in body["status"]["podIPs"]]
        assert {ipaddress.ip_address(ip).version for ip in ips} == set(VERSIONS[scenario_lab.family]), ips
        out[row["pod"]] = sorted(ips, key=lambda ip: ipaddress.ip_address(ip).version != first)
    return out


def test_upstream_scenarios_agree_with_the_engine_across_nodes_and_azs(scenario_lab: ScenarioLab) -> None:
    ips = pod_addresses(scenario_lab)
    versions = VERSIONS[scenario_lab.family]
    checks = load_scenarios(UPSTREAM + FAMILY_FILES[scenario_lab.family], pod_ips=ips)
    checks = [c for c in checks if c.family is None or c.family in versions]
    current: dict[ResourceKey, Resource] = {r.key: r for r in Topology().resources(ips)}
    failures = []
    probed = blocked = 0  # cells the kernel blocked: the agreement is not the trivial "everything open"
    for check in checks:
        wanted = {r.key: r for r in check.resources}
        for key, old in current.items():
            if key not in wanted:
                assert old.KIND == "NetworkPolicy", f"only policies come and go in the upstream cases: {key}"
                scenario_lab.cli("delete", "networkpolicy", key.name, "-n", str(key.namespace))
        changed = []
        for key, resource in wanted.items():
            if current.get(key) == resource:
                continue
            if isinstance(resource, Pod):
                changed.append(pod_doc(resource, placement(f"{key.namespace}/{key.name}")))
            else:
                changed.append(resource.to_dict())
        scenario_lab.apply_docs(changed)
        current = wanted
        scenario_lab.cli("lab", "wait", "--timeout", "60")
        for version in versions if check.family is None else (check.family,):
            out = scenario_lab.cli(
                "lab", "probe", "--protocol", check.protocol, "--port", str(check.port), "--family",
                str(version), "--compare", "--timeout", "0.3", "--attempts", "2", ok=(0, 1),
            )  # fmt: skip
            body = json.loads(out)
            assert len(body["measured"]) == 9, body["measured"]
            probed += 1
            blocked += sum(
                not ok for src, row in body["measured"].items() for dst, ok in row.items() if src != dst
            )
            if body["disagreements"]:
                where = f"{check.name} {check.protocol}/{check.port} over IPv{version}"
                failures.append(f"{check.source} [{where}]: {body['disagreements']}")
    assert not failures, f"{len(failures)} of {probed} matrices disagree:\n" + "\n".join(failures)
    denied = sum(1 for c in checks for s, d, allowed in c.expected_cells() if s != d and not allowed)
    assert blocked >= denied // 2, (blocked, denied)  # 616 denied cells in the upstream files
