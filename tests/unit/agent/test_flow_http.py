"""/v1/flows on the agent's real HTTP server, read by the `vpcnet flows` client: a snapshot, filters, and a
follow stream that delivers the records of later windows."""

from __future__ import annotations

import asyncio
from typing import Any

from vpcnet.agent.config import load_config
from vpcnet.agent.context import AgentContext
from vpcnet.agent.flow_logs import FlowLog, FlowLogComponent
from vpcnet.cli.flows import open_source, records
from vpcnet.dataplane.nflog import LoggedPacket
from vpcnet.dataplane.policy_calc import PolicyCalculator


def packet(dport: int, prefix: str = "Di0 vpcn-pi-x") -> LoggedPacket:
    return LoggedPacket(prefix, "10.0.0.2", "10.0.0.3", 6, 40000, dport, None, None, 60)


def read(port: int, query: str, limit: int) -> list[dict[str, Any]]:
    source = open_source("agent", f"127.0.0.1:{port}", query, None, 10)
    out = []
    for rec in records([source]):
        out.append(rec)
        if len(out) == limit:
            break
    return out


def test_snapshot_filter_and_follow() -> None:
    async def scenario() -> None:
        ctx = AgentContext(config=load_config({"VPCNET_FLOW_LOGS": "denied"}))
        component = FlowLogComponent(ctx)
        await component.start()  # no policy component: serves {"enabled": false} until given a flow log
        component.flow_log = FlowLog(PolicyCalculator("n1", ["eni"]), "n1", sink=None)
        await ctx.introspection.start("127.0.0.1:0")
        server = ctx.introspection._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]
        try:
            component.flow_log.add([packet(80), packet(81, "Ai1 vpcn-pi-x")])
            component.flow_log.flush()
            got = await asyncio.to_thread(read, port, "denied=0", 0)
            assert sorted(r["dst"]["port"] for r in got) == [80, 81]
            denied = await asyncio.to_thread(read, port, "denied=1", 0)
            assert [r["dst"]["port"] for r in denied] == [80]
            follower = asyncio.create_task(asyncio.to_thread(read, port, "follow=1&denied=1", 2))
            while not component.flow_log.followers:
                await asyncio.sleep(0.01)
            component.flow_log.add([packet(82)])
            component.flow_log.flush()
            followed = await asyncio.wait_for(follower, 10)
            assert [r["dst"]["port"] for r in followed] == [80, 82]
        finally:
            await ctx.introspection.stop()
            await component.stop()

    asyncio.run(scenario())
