"""Small resource builders shared by the calculation's unit tests."""

from __future__ import annotations

from typing import Any

from vpcnet.api.base import Resource
from vpcnet.api.calico import GlobalNetworkSet, NetworkSet
from vpcnet.api.core import Namespace, Pod
from vpcnet.api.loader import parse_resource
from vpcnet.policy.compile import compile_policy
from vpcnet.policy.model import Policy


def parse(doc: dict[str, Any]) -> Resource:
    return parse_resource(doc, "test")


def pod(name: str, ip: str | None, node: str = "n1", ns: str = "a", **labels: str) -> Pod:
    resource = parse(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}
                ],
            },
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {},
        }
    )
    assert isinstance(resource, Pod)
    return resource


def namespace(name: str, **labels: str) -> Namespace:
    resource = parse({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    assert isinstance(resource, Namespace)
    return resource


def network_set(name: str, ns: str | None, nets: list[str], **labels: str) -> NetworkSet | GlobalNetworkSet:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if ns is not None:
        metadata["namespace"] = ns
    kind = "NetworkSet" if ns is not None else "GlobalNetworkSet"
    resource = parse(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": {"nets": nets}}
    )
    assert isinstance(resource, NetworkSet | GlobalNetworkSet)
    return resource


def calico_policy(name: str, spec: dict[str, Any], ns: str | None = None) -> Policy:
    metadata: dict[str, Any] = {"name": name}
    if ns is not None:
        metadata["namespace"] = ns
    kind = "NetworkPolicy" if ns is not None else "GlobalNetworkPolicy"
    resource = parse({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec})
    return compile_policy(resource)  # type: ignore[arg-type]
