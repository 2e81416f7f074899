"""A pod data plane that records instead of touching the kernel (for the protocol-layer unit tests)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from vpcnet.dataplane.podnet import NotANetworkNamespace, PodSpec, WiredPod


class FakePodNetwork:
    def __init__(self) -> None:
        self.wired: dict[str, PodSpec] = {}
        self.unwired: list[IPv4Address] = []
        self.bad_netns: set[str] = set()  # paths check_netns refuses

    def check_netns(self, netns: str) -> None:
        if netns in self.bad_netns:
            raise NotANetworkNamespace(f"{netns} is not a network namespace")

    async def wire(self, spec: PodSpec) -> WiredPod:
        self.wired[spec.host_veth] = spec
        return WiredPod(spec.host_veth, "02:00:00:00:00:01", "02:00:00:00:00:02", 7)

    async def unwire(
        self, address: IPv4Address, host_veth: str | None, also: tuple[IPv4Address | IPv6Address, ...] = ()
    ) -> None:
        self.unwired.append(address)
        self.unwired.extend(also)  # type: ignore[arg-type]
        if host_veth is not None:
            self.wired.pop(host_veth, None)

    def delete_veth_later(self, name: str) -> None:
        self.wired.pop(name, None)

    async def check(self, spec: PodSpec) -> list[str]:
        return [] if spec.host_veth in self.wired else ["missing"]
