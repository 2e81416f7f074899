"""Kernel names for the policy data plane: deterministic, within the kernel's limits, never truncated.

A name that fits and uses only safe characters is kept readable; anything longer (or with other characters)
becomes the prefix plus "_" plus a hash of the whole suffix, so two different inputs never collide by
truncation. A readable suffix never starts with "_", so readable and hashed names cannot clash either.
The same names serve iptables/ipset and nftables (their rules are stricter for sets: letters, digits, "_",
"-" and "." only, which the hash alphabet respects).
"""

from __future__ import annotations

import functools
import hashlib
import re

from vpcnet.dataplane.family import IpFamily

IPTABLES_CHAIN_MAX = 28
IPSET_NAME_MAX = 31
IFNAME_MAX = 15
# The host veth's hash part: 11 hex digits of sha1, as the VPC CNI (GenerateHostVethName) and Calico's
# cni-plugin (VethNameForWorkload) make it; their names must match ours for the same pod.
HOST_VETH_HASH_LENGTH = 11

# Everything this agent creates carries this prefix: chains "vpcn-...", sets "vpcn4...",
# the nft table "vpcnet".
PREFIX = "vpcn"
CHAIN_PREFIX = PREFIX + "-"
IPSET_PREFIX = PREFIX + "4"  # IPv4 family token, like Calico's "cali4"; see ipset_prefix()
NFT_TABLE = "vpcnet"
RULE_COMMENT_PREFIX = PREFIX + ":"

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def digest(text: str, length: int) -> str:
    """A lowercase hex SHA-224 digest of text cut to length (at most 56 characters; 4 bits each).

    Hex rather than base32/64: it is several times cheaper to compute in Python (the render hashes every
    rule), and it is valid in every kernel name."""
    if not 1 <= length <= 56:
        raise ValueError(f"digest length {length} must be within 1..56")
    return hashlib.sha224(text.encode()).hexdigest()[:length]


def shorten(prefix: str, suffix: str, limit: int) -> str:
    """prefix + suffix when that fits in limit and suffix is plain; else prefix + "_" + hash(suffix)."""
    room = limit - len(prefix) - 1
    if room < 8:
        raise ValueError(f"prefix {prefix!r} leaves only {room} characters of hash within {limit}")
    if len(prefix) + len(suffix) <= limit and _SAFE.match(suffix):
        return prefix + suffix
    return prefix + "_" + digest(suffix, room)


def chain(kind: str, suffix: str) -> str:
    """A chain of ours, e.g. chain("tw-", "eni82111e10a96") -> "vpcn-tw-eni82111e10a96"."""
    return shorten(CHAIN_PREFIX + kind, suffix, IPTABLES_CHAIN_MAX)


# Fixed chains (the layout follows Calico felix: hooks -> dispatch by interface -> endpoint -> policy).
FORWARD_CHAIN = CHAIN_PREFIX + "FORWARD"
INPUT_CHAIN = CHAIN_PREFIX + "INPUT"
FROM_WL_DISPATCH = CHAIN_PREFIX + "from-wl-dispatch"
TO_WL_DISPATCH = CHAIN_PREFIX + "to-wl-dispatch"


@functools.lru_cache(maxsize=65536)
def to_workload_chain(iface: str) -> str:
    """Ingress policy of the pod behind iface (traffic leaving the host towards the pod)."""
    return chain("tw-", check_ifname(iface))


@functools.lru_cache(maxsize=65536)
def from_workload_chain(iface: str) -> str:
    """Egress policy of the pod behind iface (traffic the pod sends)."""
    return chain("fw-", check_ifname(iface))


def dispatch_child_chain(parent: str, stem: str) -> str:
    """A child of a dispatch chain holding the interfaces that start with stem (vpcn-fd-* / vpcn-td-*)."""
    kinds = {FROM_WL_DISPATCH: "fd-", TO_WL_DISPATCH: "td-"}
    if parent not in kinds:
        raise ValueError(f"{parent!r} is not a dispatch chain")
    return chain(kinds[parent], stem)


@functools.lru_cache(maxsize=65536)
def policy_chain(policy_id: str, direction: str) -> str:
    """vpcn-pi-* (ingress) / vpcn-po-* (egress) for a policy id such as "knp/default/allow-web"."""
    if direction not in ("ingress", "egress"):
        raise ValueError(f"policy direction {direction!r} must be 'ingress' or 'egress'")
    kind = "pi-" if direction == "ingress" else "po-"
    return chain(kind, policy_id)


def ipset_prefix(family: IpFamily = IpFamily.V4) -> str:
    """Every set of ours of one family starts with this ("vpcn4" / "vpcn6"), so each family's applier owns
    only its own sets (ipset's names are one namespace for both families)."""
    return f"{PREFIX}{family.value}"


def ipset_name(kind: str, set_id: str, family: IpFamily = IpFamily.V4) -> str:
    """Set for a selector ("s"), a CIDR list ("n"), or a named port ("p"); set_id is its canonical content.

    Always hashed (the content is a selector or a CIDR list, never a good name): "vpcn4s-" + 24 characters.
    """
    if kind not in ("s", "n", "p"):
        raise ValueError(f"ipset kind {kind!r} must be 's' (selector), 'n' (nets) or 'p' (named port)")
    return f"{ipset_prefix(family)}{kind}-{digest(kind + ':' + set_id, 24)}"


def temp_ipset_name(name: str, family: IpFamily = IpFamily.V4) -> str:
    """The scratch set used to replace name atomically (create temp, fill, swap, destroy)."""
    return shorten(ipset_prefix(family) + "t-", name, IPSET_NAME_MAX)


def rule_comment(chain_name: str, rule: str) -> str:
    """The id a rule carries ("vpcn:<16>"), so read-back compares ids, not the kernel's normalised text."""
    return RULE_COMMENT_PREFIX + digest(chain_name + "\0" + rule, 16)


def host_veth_name(prefix: str, namespace: str, pod: str) -> str:
    """The host side of a pod's veth: prefix + the first 11 hex digits of sha1("<namespace>.<pod>").

    The one rule the CNI (which creates it), the policy data plane (which matches on it) and the address
    manager (which asks whether it still exists) share; e.g. ("eni", "default", "web") -> "eni68caf03a5f4".
    """
    room = IFNAME_MAX - HOST_VETH_HASH_LENGTH
    size = len(prefix.encode())  # the kernel counts bytes
    if size > room:
        raise ValueError(
            f"veth prefix {prefix!r} is {size} bytes: with {HOST_VETH_HASH_LENGTH} of hash the host veth name"
            f" would exceed the kernel's {IFNAME_MAX}; the prefix may have at most {room} bytes"
        )
    # sha1 here names an interface (compatibility with the VPC CNI), not a security boundary.
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:HOST_VETH_HASH_LENGTH]


def check_ifname(iface: str) -> str:
    if not 1 <= len(iface) <= IFNAME_MAX or not re.match(r"^[A-Za-z0-9_.-]+$", iface):
        raise ValueError(f"interface name {iface!r} must be 1-{IFNAME_MAX} characters of [A-Za-z0-9_.-]")
    return iface


def check_interface_prefix(prefix: str) -> str:
    """Interface prefixes (e.g. "eni" in VPC mode, "cali" in Calico mode) follow Felix's rule."""
    if not re.match(r"^[a-zA-Z0-9_-]{1,15}$", prefix):
        raise ValueError(f"interface prefix {prefix!r} must be 1-15 characters of [a-zA-Z0-9_-]")
    return prefix
