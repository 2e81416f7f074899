"""Instance metadata (IMDS) client with IMDSv2 session tokens.

PUT /latest/api/token gives a token (TTL 6 h); every GET carries it. A 401 means the token expired:
get a new one and retry once. Connection failures are retried with backoff (IMDS may lag just
after boot or an attach).
"""

from __future__ import annotations

import asyncio
import random
import urllib.error
import urllib.request
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from vpcnet.cloud.node import NodeInfo

TOKEN_TTL_SECONDS = 21600


class ImdsError(Exception):
    pass


class ImdsNotFound(ImdsError):
    pass


class Imds:
    def __init__(self, endpoint: str = "http://169.254.169.254", *, timeout: float = 2.0, attempts: int = 6):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self._token: str | None = None
        self._rng = random.Random()

    def _fetch_token(self) -> str:
        req = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return str(resp.read().decode().strip())

    def _get_sync(self, path: str) -> str:
        for renew in (False, True):
            if self._token is None or renew:
                self._token = self._fetch_token()
            req = urllib.request.Request(
                f"{self.endpoint}/latest/meta-data/{path.lstrip('/')}",
                headers={"X-aws-ec2-metadata-token": self._token},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return str(resp.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and not renew:
                    continue
                if exc.code == 404:
                    raise ImdsNotFound(f"IMDS has no {path}") from exc
                raise ImdsError(f"IMDS {path}: HTTP {exc.code}") from exc
        raise ImdsError(f"IMDS {path}: token refused twice")

    async def get(self, path: str) -> str:
        for attempt in range(self.attempts):
            try:
                return await asyncio.to_thread(self._get_sync, path)
            except ImdsNotFound:
                raise
            except (ImdsError, urllib.error.URLError, OSError) as exc:
                if attempt + 1 >= self.attempts:
                    raise ImdsError(f"IMDS at {self.endpoint} did not answer {path}: {exc}") from exc
                await asyncio.sleep(self._rng.uniform(0, min(5.0, 0.1 * 2**attempt)))
        raise AssertionError("unreachable")

    async def ipv6_prefixes(self, mac: str) -> list[IPv6Network]:
        """The /80 (or other) IPv6 prefixes of the interface with this MAC; none when IMDS has no such key."""
        try:
            text = await self.get(f"network/interfaces/macs/{mac}/ipv6-prefix")
        except ImdsNotFound:
            return []
        return [IPv6Network(p) for p in text.split()]

    async def _optional(self, path: str) -> str:
        try:
            return (await self.get(path)).strip()
        except ImdsNotFound:
            return ""

    async def node_info(self) -> NodeInfo:
        instance_id = (await self.get("instance-id")).strip()
        instance_type = (await self.get("instance-type")).strip()
        az = (await self.get("placement/availability-zone")).strip()
        try:
            region = (await self.get("placement/region")).strip()
        except ImdsNotFound:
            region = az[:-1]
        mac = (await self.get("mac")).strip().lower()
        base = f"network/interfaces/macs/{mac}"
        eni_id = (await self.get(f"{base}/interface-id")).strip()
        local = (await self.get(f"{base}/local-ipv4s")).split()
        subnet_id = (await self.get(f"{base}/subnet-id")).strip()
        subnet_cidr = IPv4Network((await self.get(f"{base}/subnet-ipv4-cidr-block")).strip())
        vpc_cidrs = tuple(IPv4Network(c) for c in (await self.get(f"{base}/vpc-ipv4-cidr-blocks")).split())
        try:
            vpc_id = (await self.get(f"{base}/vpc-id")).strip()
        except ImdsNotFound:
            vpc_id = ""
        try:
            groups = tuple((await self.get(f"{base}/security-group-ids")).split())
        except ImdsNotFound:
            groups = ()
        ipv6s = (await self._optional(f"{base}/ipv6s")).split()
        subnet6 = (await self._optional(f"{base}/subnet-ipv6-cidr-blocks")).split()
        return NodeInfo(
            instance_id=instance_id,
            instance_type=instance_type,
            availability_zone=az,
            region=region,
            primary_eni_id=eni_id,
            primary_mac=mac,
            primary_ip=IPv4Address(local[0]),
            subnet_id=subnet_id,
            subnet_cidr=subnet_cidr,
            vpc_id=vpc_id,
            vpc_cidrs=vpc_cidrs,
            security_groups=groups,
            primary_ip6=IPv6Address(ipv6s[0]) if ipv6s else None,
            subnet6_cidr=IPv6Network(subnet6[0]) if subnet6 else None,
        )
