"""The host veth name: the one rule the CNI, the policy data plane and the address manager share."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vpcnet.dataplane.names import IFNAME_MAX, check_ifname, host_veth_name

# Kubernetes names: a namespace is a DNS label (no dots), a pod a DNS subdomain (dots allowed).
namespaces = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
pods = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,100}[a-z0-9])?", fullmatch=True)
prefixes = st.from_regex(r"[a-z]{1,4}", fullmatch=True)


def test_matches_the_vpc_cni_and_calico() -> None:
    # sha1("default.web") = 68caf03a5f4aa41b..., computed with `printf default.web | sha1sum`.
    assert host_veth_name("eni", "default", "web") == "eni68caf03a5f4"
    assert host_veth_name("eni", "kube-system", "coredns-5d78c9869d-abcde") == "eni4d5f75c480c"
    assert host_veth_name("cali", "default", "web") == "cali68caf03a5f4"
    assert host_veth_name("eni", "namespace", "podname") == "eni82111e10a96"  # Calico's own test vector


def test_a_four_character_prefix_fills_the_kernel_limit_exactly() -> None:
    assert len(host_veth_name("cali", "default", "web")) == IFNAME_MAX


@pytest.mark.parametrize("prefix", ["toolong", "calic"])
def test_a_prefix_that_cannot_fit_is_refused_by_name(prefix: str) -> None:
    with pytest.raises(ValueError, match=rf"veth prefix '{prefix}'.*at most 4"):
        host_veth_name(prefix, "default", "web")


@given(prefixes, namespaces, pods)
def test_always_a_valid_interface_name_and_deterministic(prefix: str, namespace: str, pod: str) -> None:
    name = host_veth_name(prefix, namespace, pod)
    assert len(name.encode()) <= IFNAME_MAX
    assert check_ifname(name) == name
    assert name.startswith(prefix)
    assert host_veth_name(prefix, namespace, pod) == name


@given(prefixes, namespaces, pods, namespaces, pods)
def test_different_pods_get_different_names(
    prefix: str, ns_a: str, pod_a: str, ns_b: str, pod_b: str
) -> None:
    # "<ns>.<pod>" is hashed; it is unambiguous because a namespace has no dot. 44 bits of hash make a
    # collision among a node's pods vanishingly rare (and one here would be worth knowing about).
    assume((ns_a, pod_a) != (ns_b, pod_b))
    assert host_veth_name(prefix, ns_a, pod_a) != host_veth_name(prefix, ns_b, pod_b)
