"""The assignment checkpoint: versioned JSON, rewritten atomically (temp file, fsync, rename) on every change.

Only what the cloud cannot tell us is kept: who holds which address, and which addresses are cooling down
(so a restart does not hand a just-freed address to a new pod; the VPC CNI loses this, #1127). ENIs and
their addresses are rediscovered from EC2 at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any, Protocol

from vpcnet.ipam.types import IpamKey, PodAddress

VERSION = "vpcnet-ipam/1"


class CheckpointError(Exception):
    pass


@dataclass(frozen=True)
class Allocation:
    key: IpamKey
    address: PodAddress  # written under "ipv4" or "ipv6", as the VPC CNI's checkpoint does
    eni_id: str
    pod_namespace: str
    pod_name: str
    assigned_at: float  # unix seconds
    egress_v4: IPv4Address | None = None  # an IPv6 pod's node-local IPv4 (see types.Assignment)


@dataclass
class CheckpointData:
    instance_id: str = ""
    allocations: list[Allocation] = field(default_factory=list)
    cooldown: dict[IPv4Address, float] = field(default_factory=dict)  # address -> released at, unix seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "instanceId": self.instance_id,
            "allocations": [_allocation_json(a) for a in self.allocations],
            "cooldown": [{"ipv4": str(a), "releasedAt": t} for a, t in sorted(self.cooldown.items())],
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> CheckpointData:
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            got = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointError(f"{where}: version {got!r} is not {VERSION!r}")
        out = cls(instance_id=str(raw.get("instanceId", "")))
        i = -1
        try:
            for i, a in enumerate(raw.get("allocations", [])):  # noqa: B007 (named in the error)
                meta = a.get("metadata", {})
                out.allocations.append(
                    Allocation(
                        key=IpamKey(str(a["networkName"]), str(a["containerID"]), str(a["ifName"])),
                        address=ip_address(a["ipv4"] if "ipv4" in a else a["ipv6"]),
                        eni_id=str(a.get("eniID", "")),
                        pod_namespace=str(meta.get("k8sPodNamespace", "")),
                        pod_name=str(meta.get("k8sPodName", "")),
                        assigned_at=int(a.get("allocationTimestamp", 0)) / 1e9,
                        egress_v4=IPv4Address(a["egressIPv4"]) if a.get("egressIPv4") else None,
                    )
                )
            for c in raw.get("cooldown", []):
                out.cooldown[IPv4Address(c["ipv4"])] = float(c["releasedAt"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{where}: entry {i}: {exc!r}") from exc
        return out


def _allocation_json(a: Allocation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "networkName": a.key.network,
        "containerID": a.key.container_id,
        "ifName": a.key.ifname,
        f"ipv{a.address.version}": str(a.address),
        "eniID": a.eni_id,
        "allocationTimestamp": int(a.assigned_at * 1e9),
        "metadata": {"k8sPodNamespace": a.pod_namespace, "k8sPodName": a.pod_name},
    }
    if a.egress_v4 is not None:
        out["egressIPv4"] = str(a.egress_v4)
    return out


class Checkpoint(Protocol):
    def load(self) -> CheckpointData | None: ...

    def save(self, data: CheckpointData) -> None: ...


class FileCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> CheckpointData | None:
        # temp files of a writer killed before its rename: never the checkpoint, only litter
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.path}: not JSON: {exc}") from exc
        return CheckpointData.from_json(raw, str(self.path))

    def save(self, data: CheckpointData) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(data.to_json(), indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # make the rename itself durable
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class MemoryCheckpoint:
    """For tests and the benchmark: keeps the last saved data; can be told to fail."""

    def __init__(self) -> None:
        self.data: CheckpointData | None = None
        self.saves = 0
        self.fail = False

    def load(self) -> CheckpointData | None:
        return self.data

    def save(self, data: CheckpointData) -> None:
        if self.fail:
            raise OSError("checkpoint write failed (injected)")
        self.saves += 1
        self.data = CheckpointData.from_json(data.to_json(), "memory")
