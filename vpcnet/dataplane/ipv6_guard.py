"""The IPv6 guard of Calico mode: fail closed for IPv6 pod traffic while IPv6 policy is not enforced here.

The policy calculation and its rules are IPv4 (vpcnet.dataplane.calc keeps IPv4 addresses only), so an
IPv6 packet of a pod never meets a policy. Rather than let it pass whatever the policies say, the guard
is one ip6tables chain, jumped to from FORWARD, with two states:
- open: no policy of any kind exists in the cluster, so Kubernetes' default (allow) is what policy would
  say; IPv6 pod traffic passes;
- closed (also the state at start, before the policies are known): every IPv6 packet from or to a pod
  veth is dropped, except ICMPv6 neighbour discovery (133-137), without which IPv4-only policy would
  still cut the pod off from its own gateway.
Applying renders the whole chain and sends it with `ip6tables-restore --noflush` only when it differs from
what is there (read back with ip6tables-save).
"""

from __future__ import annotations

from vpcnet.dataplane.kernel_cmd import CommandRunner

CHAIN = "vpcn6-guard"
JUMP_COMMENT = "vpcnet IPv6 guard"
ND_TYPES = (133, 134, 135, 136, 137)  # router/neighbour solicitation and advertisement, redirect


def chain_rules(prefixes: tuple[str, ...], closed: bool) -> tuple[str, ...]:
    """The guard chain's rules, as ip6tables-save prints them."""
    if not closed:
        return ()
    rules = [f"-A {CHAIN} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN" for t in ND_TYPES]
    for prefix in prefixes:
        rules += [f"-A {CHAIN} -i {prefix}+ -j DROP", f"-A {CHAIN} -o {prefix}+ -j DROP"]
    return tuple(rules)


def jump_rule() -> str:
    return f'-A FORWARD -m comment --comment "{JUMP_COMMENT}" -j {CHAIN}'


def render_restore(rules: tuple[str, ...], jump_present: bool) -> str:
    lines = ["*filter", f":{CHAIN} - [0:0]", *rules]
    if not jump_present:
        lines.append(jump_rule().replace("-A FORWARD", "-I FORWARD 1", 1))
    return "\n".join([*lines, "COMMIT"]) + "\n"


def parse_save(text: str) -> tuple[bool, tuple[str, ...]]:
    """(jump present, the chain's rules) from ip6tables-save -t filter."""
    jump = False
    rules = []
    for line in text.splitlines():
        if line.startswith(f"-A {CHAIN} "):
            rules.append(line)
        elif line.startswith("-A FORWARD") and JUMP_COMMENT in line and f"-j {CHAIN}" in line:
            jump = True
    return jump, tuple(rules)


class Ipv6Guard:
    def __init__(self, runner: CommandRunner, prefixes: tuple[str, ...]) -> None:
        self.runner = runner
        self.prefixes = prefixes
        self.closed: bool | None = None  # as last applied

    async def apply(self, closed: bool) -> bool:
        """Make the kernel's guard closed or open; True when something was sent."""
        save = await self.runner.run(["ip6tables-save", "-t", "filter"])
        jump, present = parse_save(save.check().stdout.decode())
        wanted = chain_rules(self.prefixes, closed)
        self.closed = closed
        if jump and present == wanted:
            return False
        text = render_restore(wanted, jump).encode()
        (await self.runner.run(["ip6tables-restore", "--noflush", "-w", "5"], text)).check(text)
        return True

    async def remove(self) -> None:
        save = await self.runner.run(["ip6tables-save", "-t", "filter"])
        if save.returncode != 0 or f":{CHAIN} " not in save.stdout.decode():
            return
        jump, _ = parse_save(save.stdout.decode())
        lines = ["*filter"]
        if jump:
            lines.append(jump_rule().replace("-A FORWARD", "-D FORWARD", 1))
        text = ("\n".join([*lines, f"-F {CHAIN}", f"-X {CHAIN}", "COMMIT"]) + "\n").encode()
        (await self.runner.run(["ip6tables-restore", "--noflush", "-w", "5"], text)).check(text)
