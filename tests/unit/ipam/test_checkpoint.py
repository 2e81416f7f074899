"""The assignment checkpoint file: versioned JSON, replaced atomically (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from vpcnet.ipam.checkpoint import VERSION, Allocation, CheckpointData, CheckpointError, FileCheckpoint
from vpcnet.ipam.types import IpamKey


def sample() -> CheckpointData:
    return CheckpointData(
        instance_id="i-1",
        allocations=[
            Allocation(IpamKey("aws-cni", "c1", "eth0"), IPv4Address("10.0.0.5"), "eni-1", "ns", "p1", 1700.5)
        ],
        cooldown={IPv4Address("10.0.0.6"): 1701.25},
    )


def test_round_trip_and_the_versioned_format(tmp_path: Path) -> None:
    cp = FileCheckpoint(tmp_path / "ipam.json")
    assert cp.load() is None
    cp.save(sample())
    raw = json.loads((tmp_path / "ipam.json").read_text())
    assert raw["version"] == VERSION == "vpcnet-ipam/1"
    assert raw["allocations"] == [
        {
            "networkName": "aws-cni", "containerID": "c1", "ifName": "eth0", "ipv4": "10.0.0.5",
            "eniID": "eni-1", "allocationTimestamp": 1700500000000,
            "metadata": {"k8sPodNamespace": "ns", "k8sPodName": "p1"},
        }
    ]  # fmt: skip
    assert raw["cooldown"] == [{"ipv4": "10.0.0.6", "releasedAt": 1701.25}]
    assert cp.load() == sample()
    assert os.listdir(tmp_path) == ["ipam.json"]  # no temp file left behind


def test_save_fsyncs_the_file_and_the_directory_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipam.json"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    FileCheckpoint(path).save(sample())
    assert events == ["fsync file", "rename", "fsync dir"]


def test_a_failed_write_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipam.json"
    cp = FileCheckpoint(path)
    cp.save(sample())
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        cp.save(CheckpointData(instance_id="i-1"))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ipam.json"]


def test_temp_files_of_a_killed_writer_are_removed_on_load(tmp_path: Path) -> None:
    cp = FileCheckpoint(tmp_path / "ipam.json")
    cp.save(sample())
    (tmp_path / ".ipam.json.k3j2x9").write_text(
        '{"version": "vpcnet-ipam/1", "allocat'
    )  # cut short by kill -9
    (tmp_path / "other.json").write_text("{}")
    assert cp.load() == sample()
    assert sorted(os.listdir(tmp_path)) == ["ipam.json", "other.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        (
            '{"version": "vpc-cni-ipam/1", "allocations": []}',
            "version 'vpc-cni-ipam/1' is not 'vpcnet-ipam/1'",
        ),
        ('["a list"]', "version 'list'"),
        ('{"version": "vpcnet-ipam/1", "allocations": [{"ipv4": "10.0.0.5"}]}', "entry 0"),
        (
            '{"version": "vpcnet-ipam/1", "allocations": [{"networkName": "n", "containerID": "c",'
            ' "ifName": "eth0", "ipv4": "10.0.0.300"}]}',
            "entry 0",
        ),
    ],
)
def test_a_bad_checkpoint_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ipam.json"
    path.write_text(text)
    with pytest.raises(CheckpointError) as err:
        FileCheckpoint(path).load()
    assert str(path) in str(err.value) and message in str(err.value)
