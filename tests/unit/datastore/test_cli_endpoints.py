"""A bad datastore endpoint setting is refused by the CLI with the setting's name, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vpcnet.cli.main import app


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("VPCNET_ETCD_ENDPOINTS", "ftp://etcd.example:2379", "scheme 'ftp' is not supported"),
        ("VPCNET_ETCD_ENDPOINTS", "http://127.0.0.1:2379,http://:99", "no host"),
        ("VPCNET_DATASTORE_ENDPOINTS", "127.0.0.1:notaport", "bad port"),
    ],
)
# `vpcnet get` reads the lab's Kubernetes API now; the IPAM commands read etcd.
@pytest.mark.parametrize("command", [["ipam", "show"]])
def test_bad_endpoint_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str, command: list[str]
) -> None:
    monkeypatch.delenv("VPCNET_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv("VPCNET_DATASTORE_ENDPOINTS", raising=False)
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("VPCNET_LAB", "vtnolab")  # no such lab: the setting is what decides
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {variable}: etcd endpoint" in result.output and problem in result.output


@pytest.mark.parametrize("command", [["ipam", "check"]])
def test_ipam_without_a_datastore_is_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("VPCNET_ETCD_ENDPOINTS", "http://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setenv("VPCNET_LAB", "vtnolab")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: datastore:" in result.output and "127.0.0.1:1" in result.output


def test_the_cli_finds_the_datastore_setting_then_the_lab_then_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from vpcnet.cli.resources import datastore_settings

    monkeypatch.delenv("VPCNET_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv("VPCNET_DATASTORE_ENDPOINTS", raising=False)
    layout = SimpleNamespace(state_file=tmp_path / "state.json", run_dir=tmp_path)
    assert datastore_settings(layout).endpoints == ("http://127.0.0.1:2379",)
    layout.state_file.write_text(json.dumps({"endpoints": {"etcd_host": "http://127.0.0.1:23791"}}))
    assert datastore_settings(layout).endpoints == ("http://127.0.0.1:23791",)
    monkeypatch.setenv("VPCNET_ETCD_ENDPOINTS", "http://10.9.0.1:2379")  # deprecated, still wins over the lab
    assert datastore_settings(layout).endpoints == ("http://10.9.0.1:2379",)
    monkeypatch.setenv("VPCNET_DATASTORE_ENDPOINTS", "http://10.9.0.2:2379")  # the canonical name wins
    assert datastore_settings(layout).endpoints == ("http://10.9.0.2:2379",)


def test_the_cli_uses_a_tls_labs_client_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vpcnet.cli.resources import datastore_settings

    for name in ("VPCNET_ETCD_ENDPOINTS", "VPCNET_DATASTORE_ENDPOINTS", "VPCNET_DATASTORE_CA_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    tls = tmp_path / "etcd-tls"
    tls.mkdir()
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        (tls / name).write_text("pem")
    layout = SimpleNamespace(state_file=tmp_path / "state.json", run_dir=tmp_path)
    layout.state_file.write_text(json.dumps({"endpoints": {"etcd_host": "https://127.0.0.1:23791"}}))
    settings = datastore_settings(layout)
    assert settings.tls is not None and settings.tls.cert_file == tls / "client.pem"
    assert settings.etcd().endpoints[0].tls
