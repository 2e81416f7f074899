"""The lab's kubelet daemon: watches the Pods of the lab's API and runs a kubelet pass (vpcnet.lab.kubelet)
after every change, so that `kubectl apply` and `kubectl delete` of a pod start and stop it on a node.

A lab process (started by `lab up`, in the host namespace, talking to the API on the host loopback): list,
then watch from the list's version; a burst of events makes one pass; when the watch ends or fails it lists
again, and a pass runs at least every RESYNC seconds whatever happens (a failed ADD is retried then)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from vpcnet.controllers.apiclient import ApiClient, ApiError, server_from_kubeconfig
from vpcnet.controllers.kinds import POD
from vpcnet.lab.kubelet import Kubelet
from vpcnet.lab.layout import LabLayout, check_prefix
from vpcnet.lab.podsource import ApiPods

log = logging.getLogger("vpcnet.lab.kubeletd")

RESYNC = 30.0
SETTLE = 0.05  # events arriving this close together make one pass


async def watch_pods(client: ApiClient, changed: asyncio.Event) -> None:
    delay = 0.2
    while True:
        try:
            listing = await client.list(POD)
            changed.set()
            version = str(listing.get("metadata", {}).get("resourceVersion", "0"))
            async for event in client.watch(POD, version, timeout_seconds=300):
                if event.get("type") == "ERROR":
                    break
                if event.get("type") != "BOOKMARK":
                    changed.set()
            delay = 0.2
        except (ApiError, OSError, ValueError) as exc:
            log.warning("pod watch: %s; listing again", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run(layout: LabLayout) -> None:
    client = ApiClient(server_from_kubeconfig(layout.kubeconfig))
    kubelet = Kubelet(layout, ApiPods(client))
    changed = asyncio.Event()
    watcher = asyncio.create_task(watch_pods(client, changed))
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), RESYNC)
            await asyncio.sleep(SETTLE)
            changed.clear()
            try:
                report = await kubelet.sync()
            except (ApiError, OSError, RuntimeError, ValueError) as exc:
                log.warning("kubelet pass failed: %s", exc)
                continue
            for ref in report.started:
                log.info("pod %s started", ref)
            for ref in report.stopped:
                log.info("pod %s stopped", ref)
            for ref, message in report.failed.items():
                log.warning("pod %s failed: %s", ref, message)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpcnet.lab.kubeletd", description=__doc__)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--marker", default="", help="ignored: lets `lab down` recognise the process")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    layout = LabLayout(check_prefix(args.prefix))

    async def go() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await run(layout)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
