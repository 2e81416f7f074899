"""`lab up --etcd-tls`: etcd serves TLS only and asks for client certificates. The node agents (reading etcd
over TLS with the lab's client certificate) start pods and program their policy; a client with no
certificate, or speaking plain HTTP, is refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from lab_fixture import LabCli, pod_doc, running_lab

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.settings import EtcdSettings, EtcdTls
from vpcnet.datastore.types import DatastoreError
from vpcnet.lab import labetcd

pytestmark = pytest.mark.root


async def read_one(settings: EtcdSettings) -> str:
    """'ok' when a read answers, else the error's class (a refused handshake never answers)."""
    store = EtcdDatastore(settings)
    try:
        await store.get("/vpcnet/tls-probe")
        return "ok"
    except DatastoreError as exc:
        return type(exc).__name__
    finally:
        await store.close()


def test_agents_work_over_tls_and_a_client_without_a_certificate_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with running_lab(nodes=1, agents=True, datastore="etcd", etcd_tls=True) as lab:
        assert lab.info.etcd_tls
        host_url = lab.info.endpoints["etcd_host"]
        assert host_url.startswith("https://") and lab.info.endpoints["etcd"].startswith("https://")
        # The agents read etcd (policy, pods) over TLS: a pod started through the API and mirrored into
        # etcd is programmed by its node's policy agent (`lab wait`).
        cli = LabCli(lab, tmp_path)
        cli.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n---\n" + pod_doc("p", "node1", "t"),
            "p.yaml",
        )
        tls_dir = labetcd.tls_dir(lab.layout)
        fast = {"request_timeout": 3.0, "unavailable_retry_seconds": 3.0}
        full = EtcdTls(tls_dir / "ca.pem", tls_dir / "client.pem", tls_dir / "client-key.pem")
        assert asyncio.run(read_one(EtcdSettings.from_strings([host_url], full, **fast))) == "ok"
        no_cert = EtcdSettings.from_strings([host_url], EtcdTls(tls_dir / "ca.pem"), **fast)
        assert asyncio.run(read_one(no_cert)) != "ok"
        plain = EtcdSettings.from_strings([host_url.replace("https://", "http://")], **fast)
        assert asyncio.run(read_one(plain)) != "ok"
