"""The two policy back ends behind one interface: iptables + ipset, or nftables (chosen by a setting).

Order inside one apply (both back ends): sets are created and filled before rules refer to them; sets no
longer referred to are removed after the rules. A failure leaves the previous state in place (each step
is atomic or idempotent) and makes the next apply re-read the kernel.
A data plane is of one address family (IPv4 by default; an IPv6 one uses ip6tables / inet6 sets / an ip6
table) and refuses a desired state of the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from vpcnet.dataplane import iptables_render, nft_render
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.ipset_apply import IpsetApplier
from vpcnet.dataplane.iptables_apply import IptablesApplier
from vpcnet.dataplane.kernel_cmd import CommandRunner
from vpcnet.dataplane.nft_apply import NftApplier
from vpcnet.dataplane.nft_render import NftRender
from vpcnet.dataplane.policy_state import DesiredState

BackendName = Literal["iptables", "nftables"]
BACKENDS: tuple[BackendName, ...] = ("iptables", "nftables")


@dataclass(frozen=True)
class ApplyStats:
    set_bytes: int
    rule_bytes: int

    @property
    def total(self) -> int:
        return self.set_bytes + self.rule_bytes


class PolicyDataplane(Protocol):
    name: BackendName
    family: IpFamily

    async def apply(self, state: DesiredState) -> ApplyStats:
        """Make the kernel match state, sending only what differs; 0 bytes when it already does."""
        ...

    def resync(self) -> None:
        """Distrust what was last applied: the next apply compares against the kernel itself."""
        ...

    async def installed(self) -> bool:
        """Whether the kernel holds rules of this back end (from this process or an earlier run)."""
        ...

    async def remove_all(self) -> None:
        """Remove everything this back end owns (hooks, chains, sets, or its table)."""
        ...


def same_rules(before: DesiredState | None, state: DesiredState) -> bool:
    """Whether state's rules render exactly as before's did (only set members may differ): the layout reads
    the family, prefixes, flow logs, endpoints and policies, never the sets' members. The calculation hands
    out the very same endpoint and policy objects while they are unchanged, so the compare is by identity
    first and cheap; the common change (a pod comes or goes elsewhere) then skips the whole render."""
    return (
        before is not None
        and before.family is state.family
        and before.interface_prefixes == state.interface_prefixes
        and before.flow_logs == state.flow_logs
        and before.endpoints == state.endpoints
        and before.policies == state.policies
    )


def _check_family(state: DesiredState, family: IpFamily) -> None:
    if state.family is not family:
        raise ValueError(f"an IPv{state.family.value} desired state given to an IPv{family.value} data plane")


class IptablesDataplane:
    name: BackendName = "iptables"

    def __init__(self, runner: CommandRunner, family: IpFamily = IpFamily.V4) -> None:
        self.family = family
        self.ipsets = IpsetApplier(runner, family)
        self.tables = IptablesApplier(runner, family=family)
        self._applied: DesiredState | None = None
        self._rules: DesiredState | None = None  # the state whose rules the kernel holds (None: unsure)

    async def apply(self, state: DesiredState) -> ApplyStats:
        if state is self._applied:  # the calculation hands out the same object while nothing changed
            return ApplyStats(0, 0)
        _check_family(state, self.family)
        self._applied = None
        set_bytes = await self.ipsets.apply_updates(state.ipsets)
        rule_bytes = 0
        if not same_rules(self._rules, state):
            self._rules = None
            rule_bytes = await self.tables.apply(iptables_render.render(state))
            self._rules = state
        set_bytes += await self.ipsets.apply_deletes(state.ipsets)
        self._applied = state
        return ApplyStats(set_bytes, rule_bytes)

    def resync(self) -> None:
        self._applied = None
        self._rules = None
        self.ipsets.forget()
        self.tables.forget()

    async def installed(self) -> bool:
        return bool((await self.tables.read_kernel()).chains)

    async def remove_all(self) -> None:
        self._applied = None
        self._rules = None
        await self.tables.remove_all()
        self.ipsets.forget()  # every set of ours the kernel has, not only the ones this process made
        await self.ipsets.apply_deletes({})


class NftDataplane:
    name: BackendName = "nftables"

    def __init__(self, runner: CommandRunner, family: IpFamily = IpFamily.V4) -> None:
        self.family = family
        self.table = NftApplier(runner, family)
        self._applied: DesiredState | None = None
        self._rendered: tuple[DesiredState, NftRender] | None = None  # the last render and its state

    async def apply(self, state: DesiredState) -> ApplyStats:
        if state is self._applied:
            return ApplyStats(0, 0)
        _check_family(state, self.family)
        self._applied = None
        if self._rendered is not None and same_rules(self._rendered[0], state):
            render = nft_render.with_sets(self._rendered[1], state.ipsets)  # chains and maps as they were
        else:
            render = nft_render.render(state)
        self._rendered = (state, render)  # a pure function of state: valid whether the kernel took it or not
        sent = await self.table.apply(render)
        self._applied = state
        return ApplyStats(0, sent)

    def resync(self) -> None:
        self._applied = None
        self.table.forget()

    async def installed(self) -> bool:
        return (await self.table.read_kernel()).exists

    async def remove_all(self) -> None:
        self._applied = None
        await self.table.remove_all()


def make_dataplane(backend: str, runner: CommandRunner, family: IpFamily = IpFamily.V4) -> PolicyDataplane:
    if backend == "iptables":
        return IptablesDataplane(runner, family)
    if backend == "nftables":
        return NftDataplane(runner, family)
    raise ValueError(f"policy back end {backend!r} must be one of {list(BACKENDS)}")
