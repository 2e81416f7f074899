"""The EC2 endpoint and IMDS on 127.0.0.1, without namespaces or root: for the unit tests of EC2/IMDS clients
(ipamd's boto3 client, its IMDS reader) and for trying the endpoint by hand.

    with LocalCloud() as lc:                          # VPC 10.0.0.0/16, one /19 subnet per AZ
        inst = lc.launch("m5.large")                  # an instance in the first AZ
        ec2 = boto3.client("ec2", endpoint_url=lc.ec2_url, region_name=lc.cloud.region, ...)
        imds = lc.imds_url(inst.id)                   # an IMDS that answers as that instance
        lc.faults.update({"latency": {"AttachNetworkInterface": 2}})
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from vpcnet.lab.ec2.faults import Faults
from vpcnet.lab.ec2.httpserve import RunningServer
from vpcnet.lab.ec2.model import Instance, Subnet
from vpcnet.lab.ec2.server import Ec2Service
from vpcnet.lab.ec2.state import DEFAULT_REGION, Cloud
from vpcnet.lab.imds import ImdsService


class LocalCloud:
    def __init__(
        self,
        state_file: Path | str | None = None,
        vpc_cidr: str = "10.0.0.0/16",
        azs: int = 2,
        region: str = DEFAULT_REGION,
        faults: Faults | None = None,
    ) -> None:
        if not 1 <= azs <= 6:
            raise ValueError(f"azs={azs}: 1 to 6 availability zones")
        self.cloud = Cloud(state_file, region=region)
        self.subnets: list[Subnet] = self.cloud.subnets()
        if not self.subnets:  # a fresh state: build the VPC (a reloaded one keeps its own)
            vpc = self.cloud.create_vpc(vpc_cidr)
            blocks = IPv4Network(vpc_cidr).subnets(new_prefix=min(IPv4Network(vpc_cidr).prefixlen + 3, 28))
            for i, block in zip(range(azs), blocks, strict=False):
                self.subnets.append(self.cloud.create_subnet(vpc.id, str(block), f"{region}{'abcdef'[i]}"))
        self.faults = faults if faults is not None else Faults()
        self.ec2 = Ec2Service(self.cloud, self.faults)
        self._ec2_server = self.ec2.start_local()
        self._imds: dict[str, RunningServer] = {}

    @property
    def ec2_url(self) -> str:
        return self._ec2_server.url

    def launch(self, instance_type: str = "m5.large", az_index: int = 0) -> Instance:
        return self.cloud.launch_instance(instance_type, self.subnets[az_index].id)

    def imds_url(self, instance_id: str) -> str:
        """An IMDS on 127.0.0.1 that answers every caller as `instance_id` (one server per instance)."""
        if instance_id not in self._imds:
            address = self.cloud.eni(self.cloud.instance(instance_id).primary_eni_id).primary_ip
            service = ImdsService(self.cloud, resolve_source=lambda _peer: address)
            self._imds[instance_id] = service.start_local()
        return self._imds[instance_id].url

    def close(self) -> None:
        for server in [self._ec2_server, *self._imds.values()]:
            server.close()
        self._imds.clear()

    def __enter__(self) -> LocalCloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
