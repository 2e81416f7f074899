from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from vpcnet.agent.config import load_config
from vpcnet.agent.daemon import Agent
from vpcnet.agent.ipam_metrics import ApiMetrics, PoolCollector
from vpcnet.ipam.warm import WarmTargets
from vpcnet.testing.virtual_time import run_virtual

sys.path.insert(0, str(Path(__file__).parents[1] / "ipam"))
from test_vpc_allocator import key, make_node


def test_metrics_carry_the_vpc_cni_names_and_the_pool_numbers() -> None:
    node = make_node("m5.large")
    registry = CollectorRegistry()
    api = ApiMetrics(registry)

    async def body() -> bytes:
        a = node.allocator(WarmTargets(warm_ip=3))
        await a.start()
        registry.register(PoolCollector(a))
        await asyncio.sleep(30)
        await a.assign(key(1), "ns", "p1")
        api.observe("AssignPrivateIpAddresses", 0.25, None, 200)
        api.observe("AttachNetworkInterface", 0.01, "RequestLimitExceeded", 503)
        agent = Agent(load_config({}))
        agent.ctx.metrics = registry
        _, _, text = await agent._metrics("")  # what GET /metrics serves
        await a.stop()
        return text

    text = run_virtual(body()).decode()
    for line in (
        "awscni_total_ip_addresses 3.0",
        "awscni_assigned_ip_addresses 1.0",
        "awscni_eni_allocated 1.0",
        "awscni_eni_max 3.0",
        "awscni_ip_max 27.0",
        "awscni_add_ip_req_count 1.0",
        "awscni_no_available_ip_addresses 0.0",
        "# TYPE awscni_add_ip_req_count counter",
        'awscni_aws_api_error_count{api="AttachNetworkInterface",error="RequestLimitExceeded"} 1.0',
        'awscni_ec2api_req_count{fn="AssignPrivateIpAddresses"} 1.0',
        'awscni_aws_api_latency_ms_count{api="AssignPrivateIpAddresses",error="false",status="200"} 1.0',
    ):
        assert line in text.splitlines(), line
    # the Go client's names: no _total suffix and no _created samples on awscni_* families
    names = {ln.split(" ")[2] for ln in text.splitlines() if ln.startswith("# TYPE awscni_")}
    names |= {re.split("[{ ]", ln)[0] for ln in text.splitlines() if ln.startswith("awscni_")}
    assert not [n for n in names if n.endswith(("_total", "_created")) and n != "awscni_total_ip_addresses"]
    assert "awscni_total_ip_addresses" in names
    assert "vpcnet_enis_created_total 0.0" in text  # vpcnet's own families keep the Python client's form
