"""Discovery documents in their legacy (non-aggregated) form, which kubectl and the clients fall back to,
and a minimal OpenAPI v2 document (JSON, or protobuf as kubectl asks for it) that names no kinds, so that
kubectl's client-side schema validation has nothing to object to."""

from __future__ import annotations

from typing import Any

from vpcnet.lab.kubeapi.resources import Registry

# The release whose API we imitate (for `kubectl version` and the clients' compatibility checks).
VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-vpcnet-lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
OPENAPI_TITLE = "vpcnet lab Kubernetes API"
OPENAPI_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources = [entry for rt in types for entry in rt.discovery()]
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def openapi_v2_json() -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": OPENAPI_TITLE, "version": VERSION["gitVersion"]},
        "paths": {},
        "definitions": {},
    }


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    tag = (number << 3) | 2
    return bytes([tag]) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def openapi_v2_protobuf() -> bytes:
    """gnostic's openapi_v2.Document: swagger (1) = "2.0", info (2) = {title (1), version (2)},
    paths (8) = {}."""
    info = _field(1, OPENAPI_TITLE.encode()) + _field(2, VERSION["gitVersion"].encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")
