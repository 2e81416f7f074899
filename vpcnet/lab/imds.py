"""The lab's instance metadata service (what nodes reach at 169.254.169.254), IMDSv2 only.

The caller is the instance one of whose ENIs holds the request's source address (`Cloud.instance_by_address`);
every answer is read live from the EC2 state, so it is always consistent with the endpoint.

    PUT /latest/api/token  (X-aws-ec2-metadata-token-ttl-seconds: 1..21600)  -> a token for this instance
    GET /latest/meta-data/...  (X-aws-ec2-metadata-token: T)                  -> 401 without a valid one
    GET /latest/dynamic/instance-identity/document                            -> the identity JSON

The token answer travels with IP TTL = the hop limit (EC2's HttpPutResponseHopLimit, default 1 here as on
EKS-recommended instances): the node gets it, a pod behind the node's routing (one hop more) does not,
not even from TCP's retransmissions (the connection keeps that TTL and closes after the answer).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network

from vpcnet.lab.ec2.httpserve import LabHTTPServer, Request, Response, RunningServer, bind_local, make_server
from vpcnet.lab.ec2.model import Eni, Instance
from vpcnet.lab.ec2.state import Cloud

TOKEN_HEADER = "x-aws-ec2-metadata-token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL = 21600
DEFAULT_HOP_LIMIT = 1  # HttpPutResponseHopLimit

Tree = dict[str, "str | Tree"]

_NOT_FOUND = (
    b'<?xml version="1.0" encoding="iso-8859-1"?>\n'
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    b'\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    b" <head>\n  <title>404 - Not Found</title>\n </head>\n"
    b" <body>\n  <h1>404 - Not Found</h1>\n </body>\n</html>\n"
)


def _text(status: int, body: str) -> Response:
    return Response(status, body.encode(), "text/plain")


def _not_found() -> Response:
    return Response(404, _NOT_FOUND, "text/html")


class ImdsApp:
    """The IMDS HTTP app. `resolve_source` maps the peer address to the instance address it stands for
    (tests pass a fake; the lab serves in the VPC namespace where the peer address is the node's own)."""

    def __init__(
        self,
        cloud: Cloud,
        resolve_source: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        hop_limit: int = DEFAULT_HOP_LIMIT,
    ) -> None:
        if not 1 <= hop_limit <= 64:
            raise ValueError(
                f"IMDS hop limit must be 1-64 (as EC2's HttpPutResponseHopLimit), got {hop_limit}"
            )
        self.cloud = cloud
        self.hop_limit = hop_limit
        self._resolve = resolve_source or (lambda ip: ip)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (instance id, expiry)

    def __call__(self, request: Request) -> Response:
        instance = self.cloud.instance_by_address(self._resolve(request.client_ip))
        if request.path == "/latest/api/token":
            if request.method != "PUT":
                return _text(405, "Method Not Allowed: the token is obtained with PUT\n")
            return self._issue_token(request, instance)
        if request.method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed\n")
        if instance is None or not self._token_ok(request.headers.get(TOKEN_HEADER, ""), instance.id):
            return _text(401, "Unauthorized\n")
        if request.path == "/latest/dynamic/instance-identity/document":
            return Response(200, json.dumps(self._identity(instance), indent=2).encode(), "text/plain")
        prefix = "/latest/meta-data"
        if request.path != prefix and not request.path.startswith(prefix + "/"):
            return _not_found()
        tree = self.metadata_tree(instance)
        if tree is None:  # terminated since the address was looked up
            return _not_found()
        return self._lookup(tree, request.path[len(prefix) :])

    def _issue_token(self, request: Request, instance: Instance | None) -> Response:
        if "x-forwarded-for" in request.headers:
            return _text(403, "Forbidden: token requests must not be forwarded\n")
        raw = request.headers.get(TTL_HEADER, "")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TTL:
            return _text(400, f"Bad Request: {TTL_HEADER} must be 1..{MAX_TTL} seconds\n")
        if instance is None:
            return _text(403, f"Forbidden: {request.client_ip} is not an address of a lab instance\n")
        token = secrets.token_urlsafe(40)
        now = self._clock()
        with self._lock:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (instance.id, now + int(raw))
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": raw}
        return Response(200, token.encode(), "text/plain", headers, ip_ttl=self.hop_limit)

    def _token_ok(self, token: str, instance_id: str) -> bool:
        with self._lock:
            entry = self._tokens.get(token)
        return entry is not None and entry[0] == instance_id and entry[1] > self._clock()

    @staticmethod
    def _lookup(tree: Tree, subpath: str) -> Response:
        node: str | Tree = tree
        for part in [p for p in subpath.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                return _not_found()
            node = node[part]
        if isinstance(node, dict):
            listing = [f"{k}/" if isinstance(v, dict) else k for k, v in node.items()]
            return _text(200, "\n".join(listing))
        return _text(200, node)

    def _identity(self, inst: Instance) -> dict[str, object]:
        primary = self.cloud.eni(inst.primary_eni_id)
        return {
            "accountId": self.cloud.account,
            "architecture": "x86_64",
            "availabilityZone": inst.az,
            "imageId": inst.image_id,
            "instanceId": inst.id,
            "instanceType": inst.instance_type,
            "pendingTime": inst.launch_time,
            "privateIp": primary.primary_ip,
            "region": self.cloud.region,
            "version": "2017-09-30",
        }

    def metadata_tree(self, inst: Instance) -> Tree | None:
        """/latest/meta-data/ of one instance, read from the state now (None once it is terminated)."""
        enis = self.cloud.enis_of(inst.id)
        primary = next((e for e in enis if e.id == inst.primary_eni_id), None)
        if primary is None:
            return None
        hostname = f"ip-{primary.primary_ip.replace('.', '-')}.{self.cloud.region}.compute.internal"
        macs: Tree = {e.mac: self._mac_tree(e) for e in enis}
        return {
            "ami-id": inst.image_id,
            "hostname": hostname,
            "instance-id": inst.id,
            "instance-type": inst.instance_type,
            "local-hostname": hostname,
            "local-ipv4": primary.primary_ip,
            "mac": primary.mac,
            "network": {"interfaces": {"macs": macs}},
            "placement": {"availability-zone": inst.az, "region": self.cloud.region},
            "security-groups": "\n".join(
                self.cloud.security_group(g).name for g in primary.security_group_ids
            ),
        }

    def _mac_tree(self, eni: Eni) -> Tree:
        subnet = self.cloud.subnet(eni.subnet_id)
        vpc = self.cloud.vpc(eni.vpc_id)
        att = eni.attachment
        assert att is not None
        node: Tree = {
            "device-number": str(att.device_index),
            "interface-id": eni.id,
            "local-hostname": f"ip-{eni.primary_ip.replace('.', '-')}.{self.cloud.region}.compute.internal",
            "local-ipv4s": "\n".join(eni.private_ips),
            "mac": eni.mac,
            "network-card": str(att.network_card_index),
            "network-card-index": str(att.network_card_index),
            "owner-id": self.cloud.account,
            "security-group-ids": "\n".join(eni.security_group_ids),
            "security-groups": "\n".join(self.cloud.security_group(g).name for g in eni.security_group_ids),
            "subnet-id": eni.subnet_id,
            "subnet-ipv4-cidr-block": subnet.cidr,
            "vpc-id": eni.vpc_id,
            "vpc-ipv4-cidr-block": vpc.cidr,
            "vpc-ipv4-cidr-blocks": str(IPv4Network(vpc.cidr)),
        }
        if eni.prefixes:  # IMDS has no ipv4-prefix key while the ENI holds none (a GET is a 404)
            node["ipv4-prefix"] = "\n".join(eni.prefixes)
        node.update(self._ipv6_keys(eni, subnet.ipv6_cidr, vpc.ipv6_cidr))
        return dict(sorted(node.items()))

    @staticmethod
    def _ipv6_keys(eni: Eni, subnet_block: str, vpc_block: str) -> Tree:
        """The IPv6 keys of a MAC, each present only when it has a value (as on EC2: a GET is a 404)."""
        keys: Tree = {}
        if eni.ipv6_addresses:
            keys["ipv6s"] = "\n".join(eni.ipv6_addresses)
        if eni.ipv6_prefixes:
            keys["ipv6-prefix"] = "\n".join(eni.ipv6_prefixes)
        if subnet_block:
            keys["subnet-ipv6-cidr-blocks"] = subnet_block
        if vpc_block:
            keys["vpc-ipv6-cidr-blocks"] = vpc_block
        return keys


class ImdsService:
    """Serving the IMDS app, like `Ec2Service`: on a caller-bound socket or 127.0.0.1:0."""

    def __init__(
        self,
        cloud: Cloud,
        resolve_source: Callable[[str], str] | None = None,
        hop_limit: int = DEFAULT_HOP_LIMIT,
    ) -> None:
        self.app = ImdsApp(cloud, resolve_source, hop_limit=hop_limit)

    def make_server(self, sock: socket.socket) -> LabHTTPServer:
        return make_server(self.app, sock)

    def serve_socket(self, sock: socket.socket) -> None:
        self.make_server(sock).serve_forever()

    def start_local(self, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
        return RunningServer(self.make_server(bind_local(host, port)))
