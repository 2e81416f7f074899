"""ipamd in the lab: the agent on each node manages its ENIs through the lab's EC2 endpoint and IMDS."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from ipamd_lab import (
    add_until_done,
    agreed_with_ec2,
    cni,
    ipam,
    kill_agent,
    restart_agents,
    set_faults,
    unattached_enis_of,
    wait_for,
)
from lab_fixture import LabHandle

pytestmark = pytest.mark.root

FAST = {"VPCNET_POOL_INTERVAL": "0.5", "VPCNET_RECONCILE_INTERVAL": "3", "IP_COOLDOWN_PERIOD": "5"}
Factory = Callable[..., AbstractContextManager[LabHandle]]


def kernel_checks(lab: LabHandle, node: str, doc: dict[str, Any], mtu: int = 9001) -> None:
    """Each secondary ENI as on EKS: link up with the MTU and its primary IP, table device+1 with the
    gateway link route and default route, rule from its primary IP at priority 32765."""
    links = {
        link["address"]: link
        for link in json.loads(lab.exec(node, "ip", "-j", "-d", "addr", "show").stdout)
        if "address" in link
    }
    rules = json.loads(lab.exec(node, "ip", "-j", "rule", "show").stdout)
    for eni in doc["ENIs"]:
        if eni["isPrimary"]:
            continue
        table = eni["routeTableId"]
        assert table == eni["deviceNumber"] + 1
        link = links[eni["mac"]]
        assert link["mtu"] == mtu and "UP" in link["flags"]
        assert eni["primaryIP"] in [a["local"] for a in link["addr_info"] if a["family"] == "inet"]
        routes = json.loads(lab.exec(node, "ip", "-j", "route", "show", "table", str(table)).stdout)
        gw = (
            ".".join(eni["subnetCIDR"].split("/")[0].split(".")[:3])
            + "."
            + str(int(eni["subnetCIDR"].split("/")[0].split(".")[3]) + 1)
        )
        assert {"dst": "default", "gateway": gw, "dev": link["ifname"]}.items() <= next(
            r for r in routes if r["dst"] == "default"
        ).items()
        assert any(r["dst"] == gw and r.get("scope") == "link" for r in routes)
        # the subnet route the kernel adds in main for the ENI's address is moved out, as on EKS nodes
        main = json.loads(lab.exec(node, "ip", "-j", "route", "show", "table", "main").stdout)
        assert [r for r in main if r.get("dev") == link["ifname"]] == [], main
        mine = [r for r in rules if r.get("src") == eni["primaryIP"]]
        assert len(mine) == 1 and mine[0]["priority"] == 32765 and str(mine[0]["table"]) == str(table)


@pytest.mark.parametrize(
    ("itype", "env", "enis", "total", "prefixes"),
    [
        ("t3.medium", {}, 1, 5, 0),  # WARM_ENI_TARGET=1: one ENI's worth of free addresses
        ("t3.medium", {"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "8"}, 2, 8, 0),
        ("m5.large", {"WARM_ENI_TARGET": "2", "AWS_VPC_ENI_MTU": "1500"}, 2, 18, 0),
        ("m5.large", {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}, 1, 16, 1),
    ],
)
def test_pool_settles_at_the_counts_the_knobs_imply(
    lab_factory: Factory, itype: str, env: dict[str, str], enis: int, total: int, prefixes: int
) -> None:
    with lab_factory(nodes=1, instance_type=itype, agents=True, agent_env={**FAST, **env}) as lab:

        def settled() -> bool:
            d = ipam(lab, "node1")
            return bool(d["totalIPs"] == total and len(d["ENIs"]) == enis)

        wait_for(f"{total} addresses on {enis} ENIs", settled, 60)
        time.sleep(2)  # and it stays there
        doc = agreed_with_ec2(lab, "node1")
        assert (doc["totalIPs"], len(doc["ENIs"])) == (total, enis)
        assert sum(len(e["prefixes"]) for e in doc["ENIs"]) == prefixes
        kernel_checks(lab, "node1", doc, mtu=int(env.get("AWS_VPC_ENI_MTU", "9001")))


def test_pods_up_to_max_pods_then_a_clear_error(lab_factory: Factory) -> None:
    with lab_factory(nodes=1, instance_type="t3.medium", agents=True, agent_env=FAST) as lab:
        wait_for("the pool", lambda: ipam(lab, "node1")["totalIPs"] >= 5, 60)
        deadline = time.monotonic() + 90
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: add_until_done(lab, "node1", f"p{i}", deadline), range(15)))
        addresses = [r["ips"][0]["address"].split("/")[0] for r in results]
        assert len(set(addresses)) == 15  # max pods 17 = 15 VPC addresses + 2 host-network pods
        rc, out = cni(lab, "node1", "ADD", "p15")
        assert rc != 0
        assert "t3.medium allows 3 ENIs x 5 addresses = 15" in out["details"], out
        doc = agreed_with_ec2(lab, "node1")
        assert doc["assignedIPs"] == 15
        kernel_checks(lab, "node1", doc)
        # DEL gives the address back (into its cooldown), and is idempotent
        assert cni(lab, "node1", "DEL", "p3")[0] == 0
        assert cni(lab, "node1", "DEL", "p3")[0] == 0
        doc = ipam(lab, "node1")
        assert (doc["assignedIPs"], doc["coolingIPs"]) == (14, 1)


def test_kill_9_mid_burst_then_restart_loses_and_duplicates_nothing(lab_factory: Factory) -> None:
    env = {**FAST, "WARM_IP_TARGET": "1", "VPCNET_LEAKED_ENI_GRACE": "3"}
    with lab_factory(nodes=1, instance_type="m5.large", agents=True, agent_env=env) as lab:
        set_faults(lab, {"latency": {"AttachNetworkInterface": 2.0, "AssignPrivateIpAddresses": 0.2}})
        wait_for("the pool", lambda: ipam(lab, "node1")["totalIPs"] >= 1, 60)
        pods = [f"k{i}" for i in range(20)]
        done: dict[str, dict[str, Any]] = {}
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            futures = {ex.submit(cni, lab, "node1", "ADD", p): p for p in pods}
            time.sleep(1.0)
            kill_agent(lab, "node1")  # mid-burst: some pods have addresses, ENIs are being attached
            for f in concurrent.futures.as_completed(futures):
                rc, out = f.result()
                if rc == 0:
                    done[futures[f]] = out
        assert 0 < len(done) < 20, f"{len(done)} pods finished before the kill: the burst was not cut"
        restart_agents(lab, "m5.large", env)
        deadline = time.monotonic() + 120
        for p in pods:  # the runtime retries every pod (ADD is idempotent for those that finished)
            out = add_until_done(lab, "node1", p, deadline)
            if p in done:
                assert out["ips"][0]["address"] == done[p]["ips"][0]["address"]
            done[p] = out
        addresses = [o["ips"][0]["address"].split("/")[0] for o in done.values()]
        assert len(set(addresses)) == 20  # nothing held twice
        wait_for("leaked ENIs swept", lambda: unattached_enis_of(lab, "node1") == [], 30)
        # the pool settles (the warm address may still be on its way) and every EC2 address is the agent's
        doc = agreed_with_ec2(lab, "node1")
        held = {ip["address"]: ip["pod"] for e in doc["ENIs"] for ip in e["ips"] if ip["assigned"]}
        assert set(held) == set(addresses)  # nothing lost: the agent holds exactly the pods' addresses
        checkpoint = json.loads((lab.layout.checkpoint_file("node1")).read_text())
        assert sorted(a["ipv4"] for a in checkpoint["allocations"]) == sorted(addresses)
        kernel_checks(lab, "node1", doc)


def test_throttling_and_latency_every_pod_gets_one_address_no_leak(lab_factory: Factory) -> None:
    env = {**FAST, "WARM_IP_TARGET": "1", "VPCNET_LEAKED_ENI_GRACE": "3"}
    with lab_factory(nodes=1, instance_type="m5.large", agents=True, agent_env=env) as lab:
        set_faults(
            lab,
            {
                "latency": {"*": 0.05, "AttachNetworkInterface": 1.0},
                "throttle": {"mutating": {"capacity": 2, "refill_per_second": 1}},
            },
        )
        deadline = time.monotonic() + 150
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            results = list(ex.map(lambda i: add_until_done(lab, "node1", f"t{i}", deadline), range(24)))
        addresses = [r["ips"][0]["address"].split("/")[0] for r in results]
        assert len(set(addresses)) == 24
        metrics = lab.exec("node1", "python3", "-c", _METRICS).stdout
        assert 'awscni_aws_api_error_count{api="' in metrics and "RequestLimitExceeded" in metrics
        set_faults(lab, {"reset": True})
        wait_for("leaked ENIs swept", lambda: unattached_enis_of(lab, "node1") == [], 30)
        doc = agreed_with_ec2(lab, "node1")
        kernel_checks(lab, "node1", doc)


_METRICS = (
    "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:61678/metrics').read().decode())"
)


def test_custom_networking_pods_on_the_eniconfig_subnet(tmp_path: Any) -> None:
    import dataclasses
    import os

    from lab_fixture import random_prefix

    from vpcnet.lab import labctl
    from vpcnet.lab.layout import LabLayout
    from vpcnet.lab.topology import build_topology

    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    layout = LabLayout(random_prefix())
    eniconfig = tmp_path / "eniconfig.yaml"
    env = {
        **FAST,
        "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true",
        "VPCNET_ENI_CONFIG_FILE": str(eniconfig),
        "WARM_IP_TARGET": "3",
    }
    topo = build_topology(nodes=1, azs=1, instance_type="m5.large", pod_subnets=True)
    try:
        # the subnet ids are the endpoint's: bring the lab up without agents, write the ENIConfig, then
        # start the node's agent with it (as `lab up` would)
        info = labctl.up(topo, layout, agents=False).info
        pod_subnet = next(s for s in info.subnets.values() if s["role"] == "pod")
        eniconfig.write_text(
            f"kind: ENIConfig\nmetadata: {{name: {pod_subnet['az']}}}\n"
            f"spec: {{subnet: {pod_subnet['id']}, securityGroups: []}}\n"
        )
        info = dataclasses.replace(info, agents=True, agent_settings=env)
        labctl.start_agent(layout, "node1", info)
        lab = LabHandle(layout, info)
        wait_for("the pool", lambda: ipam(lab, "node1")["totalIPs"] >= 3, 60)
        out = add_until_done(lab, "node1", "c1", time.monotonic() + 60)
        address = out["ips"][0]["address"].split("/")[0]
        import ipaddress

        assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(pod_subnet["cidr"])
        doc = agreed_with_ec2(lab, "node1")
        primary = next(e for e in doc["ENIs"] if e["isPrimary"])
        assert primary["addresses"] == 0 and not primary["carriesPods"]
        assert all(e["subnet"] == pod_subnet["id"] for e in doc["ENIs"] if not e["isPrimary"])
        kernel_checks(lab, "node1", doc)
    finally:
        labctl.down(layout)


def test_an_add_that_outwaits_a_failing_ec2_is_try_again_later(lab_factory: Factory) -> None:
    """EC2 fails every call that would grow the pool: the ADD that finds the pool empty waits
    VPCNET_ASSIGN_WAIT and answers 11 (the runtime retries it), not 100; once EC2 answers again, the
    retried ADD gets its address."""
    env = {**FAST, "WARM_IP_TARGET": "1", "VPCNET_ASSIGN_WAIT": "3"}
    with lab_factory(nodes=1, instance_type="t3.medium", agents=True, agent_env=env) as lab:
        wait_for("the pool", lambda: ipam(lab, "node1")["totalIPs"] >= 1, 60)
        failing = {"code": "InternalError", "probability": 1.0}
        growth = ("AssignPrivateIpAddresses", "AttachNetworkInterface", "CreateNetworkInterface")
        set_faults(lab, {"failures": {name: failing for name in growth}})
        rc, out = cni(lab, "node1", "ADD", "w0")  # the warm address
        assert rc == 0, out
        rc, out = cni(lab, "node1", "ADD", "w1")
        assert rc != 0 and out.get("code") == 11, out
        assert "VPCNET_ASSIGN_WAIT" in out.get("details", ""), out
        set_faults(lab, {"reset": True})
        result = add_until_done(lab, "node1", "w1", time.monotonic() + 90)
        assert result["ips"][0]["address"] != ""
        for pod in ("w0", "w1"):
            assert cni(lab, "node1", "DEL", pod)[0] == 0
