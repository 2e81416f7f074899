"""Cluster state kinds (core/v1): Namespace and Pod, with the fields networking needs.

Pods keep the fields vpcnet does not model (image, command, resources, ...) verbatim in `extra`
dicts so that storing and reading a Pod loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from vpcnet.api.base import ObjectMeta, Resource, register_kind, spec_of
from vpcnet.api.fields import (
    Ctx,
    IPAddress,
    as_list,
    as_mapping,
    dns_label_problem,
    join,
    opt_bool,
    opt_int,
    opt_str,
    parse_ip,
    port_name_problem,
    quote,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@register_kind
@dataclass
class Namespace(Resource):
    """A namespace. Its labels always include kubernetes.io/metadata.name=<name>, as Kubernetes sets it."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Namespace"
    NAMESPACED: ClassVar[bool] = False
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("apiVersion", "kind", "metadata", "spec", "status")
    NAME_RULE: ClassVar[str] = "label"

    metadata: ObjectMeta

    def __post_init__(self) -> None:
        self.metadata.labels[NAMESPACE_NAME_LABEL] = self.metadata.name

    @classmethod
    def named(cls, name: str, labels: dict[str, str] | None = None) -> Namespace:
        return cls(ObjectMeta(name=name, labels=dict(labels or {})))

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        return cls(metadata)

    def to_dict(self) -> dict[str, Any]:
        return self._header()


@dataclass
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"containerPort": self.container_port, "protocol": self.protocol}
        if self.name is not None:
            out["name"] = self.name
        out.update(self.extra)
        return out


@dataclass
class Container:
    name: str
    ports: list[ContainerPort] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        out.update(self.extra)
        if self.ports:
            out["ports"] = [p.to_dict() for p in self.ports]
        return out


def _check_host_port(ctx: Ctx, port: dict[str, Any], path: str) -> None:
    """hostPort, kept verbatim in `extra`, is still a port number: 1-65535; 0 means none, as in Kubernetes."""
    host_port = port.get("hostPort")
    if not (type(host_port) is int and host_port == 0):
        opt_int(ctx, port, "hostPort", path, 1, 65535)
    if port.get("hostIP") is not None:
        parse_ip(ctx, port["hostIP"], join(path, "hostIP"))


@register_kind
@dataclass
class Pod(Resource):
    """A pod as networking sees it: labels, node, container ports (for named ports), IPs."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Pod"
    NAMESPACED: ClassVar[bool] = True
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("apiVersion", "kind", "metadata", "spec", "status")

    metadata: ObjectMeta
    containers: list[Container] = field(default_factory=list)
    node_name: str | None = None
    host_network: bool = False
    service_account_name: str | None = None
    pod_ips: list[str] = field(default_factory=list)  # status.podIPs; pod_ips[0] is status.podIP
    spec_extra: dict[str, Any] = field(default_factory=dict)
    status_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_ip(self) -> str | None:
        return self.pod_ips[0] if self.pod_ips else None

    @property
    def ref(self) -> str:
        """ "<namespace>/<name>", the form the policy commands use."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of the container port called `name` with `protocol`, if any."""
        for container in self.containers:
            for port in container.ports:
                if port.name == name and port.protocol == protocol:
                    return port.container_port
        return None

    @classmethod
    def parse(cls, ctx: Ctx, doc: dict[str, Any], metadata: ObjectMeta) -> Self:
        spec = spec_of(ctx, doc)
        containers: list[Container] = []
        cpath = "spec.containers"
        raw_containers = as_list(ctx, spec.get("containers"), cpath)
        if not raw_containers:
            ctx.fault(cpath, "required: at least one container")
        port_names: dict[str, str] = {}
        for i, raw in enumerate(raw_containers):
            path = join(cpath, i)
            data = as_mapping(ctx, raw, path)
            name = opt_str(ctx, data, "name", path)
            if not name:
                ctx.fault(join(path, "name"), "required")
                name = ""
            elif problem := dns_label_problem(name):
                ctx.fault(join(path, "name"), problem)
            ports: list[ContainerPort] = []
            for j, raw_port in enumerate(as_list(ctx, data.get("ports"), join(path, "ports"))):
                ppath = join(join(path, "ports"), j)
                pdata = as_mapping(ctx, raw_port, ppath)
                number = opt_int(ctx, pdata, "containerPort", ppath, 1, 65535)
                if "containerPort" not in pdata:
                    ctx.fault(join(ppath, "containerPort"), "required")
                protocol = opt_str(ctx, pdata, "protocol", ppath) or "TCP"
                if protocol not in PROTOCOLS:
                    ctx.fault(
                        join(ppath, "protocol"),
                        f"must be one of {', '.join(PROTOCOLS)}, got {quote(protocol)}",
                    )
                pname = opt_str(ctx, pdata, "name", ppath)
                if pname is not None:
                    if problem := port_name_problem(pname):
                        ctx.fault(join(ppath, "name"), problem)
                    elif pname in port_names:
                        ctx.fault(
                            join(ppath, "name"),
                            f"duplicate port name {quote(pname)} (also {port_names[pname]})",
                        )
                    else:
                        port_names[pname] = ppath
                _check_host_port(ctx, pdata, ppath)
                extra = {k: v for k, v in pdata.items() if k not in ("containerPort", "protocol", "name")}
                ports.append(ContainerPort(number or 0, protocol, pname, extra))
            cextra = {k: v for k, v in data.items() if k not in ("name", "ports")}
            containers.append(Container(name, ports, cextra))
        node_name = opt_str(ctx, spec, "nodeName", "spec")
        host_network = bool(opt_bool(ctx, spec, "hostNetwork", "spec"))
        sa = opt_str(ctx, spec, "serviceAccountName", "spec")
        spec_extra = {
            k: v
            for k, v in spec.items()
            if k not in ("containers", "nodeName", "hostNetwork", "serviceAccountName")
        }

        status = as_mapping(ctx, doc.get("status"), "status")
        ips: list[str] = []
        pod_ip = status.get("podIP")
        if pod_ip is not None and parse_ip(ctx, pod_ip, "status.podIP") is not None:
            ips.append(str(pod_ip))
        for i, entry in enumerate(as_list(ctx, status.get("podIPs"), "status.podIPs")):
            path = join("status.podIPs", i)
            edata = as_mapping(ctx, entry, path)
            addr: IPAddress | None = parse_ip(ctx, edata.get("ip"), join(path, "ip"))
            if addr is None:
                continue
            if i == 0 and ips and ips[0] != str(addr):
                ctx.fault(path, f"podIPs[0] ({addr}) must equal podIP ({ips[0]})")
            elif str(addr) not in ips:
                ips.append(str(addr))
        status_extra = {k: v for k, v in status.items() if k not in ("podIP", "podIPs")}
        return cls(
            metadata=metadata,
            containers=containers,
            node_name=node_name,
            host_network=host_network,
            service_account_name=sa,
            pod_ips=ips,
            spec_extra=spec_extra,
            status_extra=status_extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out = self._header()
        spec: dict[str, Any] = {"containers": [c.to_dict() for c in self.containers]}
        if self.node_name is not None:
            spec["nodeName"] = self.node_name
        if self.host_network:
            spec["hostNetwork"] = True
        if self.service_account_name is not None:
            spec["serviceAccountName"] = self.service_account_name
        spec.update(self.spec_extra)
        out["spec"] = spec
        status: dict[str, Any] = dict(self.status_extra)
        if self.pod_ips:
            status["podIP"] = self.pod_ips[0]
            status["podIPs"] = [{"ip": ip} for ip in self.pod_ips]
        if status:
            out["status"] = status
        return out
