"""The lab's kubelet daemon: watches the Pods of the lab's API and runs a kubelet pass (vpcnet.lab.kubelet)
after every change, so that `kubectl apply` and `kubectl delete` of a pod start and stop it on a node.

A lab process (started by `lab up`, in the host namespace, talking to the API on the host loopback). It
follows the Pods through the Kubernetes store's reflector (vpcnet/datastore/reflector.py: list, watch with
bookmarks, relist on 410, backoff, hang detection); a burst of events makes one pass, and a pass runs at
least every RESYNC seconds whatever happens (a failed ADD is retried then)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.open import open_kube_store
from vpcnet.datastore.types import DatastoreError, WatchCompacted
from vpcnet.lab.kubelet import Kubelet
from vpcnet.lab.layout import LabLayout, check_prefix
from vpcnet.lab.podsource import ApiPods

log = logging.getLogger("vpcnet.lab.kubeletd")

RESYNC = 30.0
SETTLE = 0.05  # events arriving this close together make one pass


async def watch_pods(store: KubeResourceStore, changed: asyncio.Event) -> None:
    delay = 0.2
    while True:
        try:
            _, revision = await store.snapshot(["pod"])
            changed.set()
            async for _event in store.watch(["pod"], revision + 1):
                changed.set()
        except WatchCompacted:
            continue  # the store's event log moved past us: take a snapshot again
        except DatastoreError as exc:
            log.warning("pod watch: %s; again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run(layout: LabLayout) -> None:
    store = await open_kube_store(layout.kubeconfig)
    kubelet = Kubelet(layout, ApiPods(store))
    changed = asyncio.Event()
    watcher = asyncio.create_task(watch_pods(store, changed))
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), RESYNC)
            await asyncio.sleep(SETTLE)
            changed.clear()
            try:
                report = await kubelet.sync()
            except (DatastoreError, OSError, RuntimeError, ValueError) as exc:
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
        await store.close()


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
