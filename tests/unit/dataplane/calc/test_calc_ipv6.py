"""The calculation per address family: IPv6 pods, ipBlocks of either family, ICMPv6, the /0 halves, and the
IPv4 egress plane of IPv6 pods (its endpoint address from elsewhere than the pod's IPs)."""

from __future__ import annotations

from typing import Any

import yaml

from vpcnet.api.core import Pod
from vpcnet.api.loader import load_documents
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import canonical_nets
from vpcnet.policy.compile import compile_policy

V4, V6 = IpFamily.V4, IpFamily.V6


def load(doc: dict[str, Any]) -> Any:
    (resource,) = load_documents(yaml.safe_dump(doc))
    return resource


def pod(name: str, ips: list[str], node: str = "n1", **labels: str) -> Pod:
    port = {"name": "http", "containerPort": 8080}
    status = {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]} if ips else {}
    resource = load(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": [port]}]},
            "status": status,
        }
    )
    assert isinstance(resource, Pod)
    return resource


def netpol(name: str, spec: dict[str, Any]) -> Any:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    return compile_policy(load({**doc, "metadata": {"name": name, "namespace": "default"}, "spec": spec}))


ALLOW_CLIENTS_ON_HTTP = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}],
}


def test_a_slash_0_is_its_two_halves_in_either_family() -> None:
    assert canonical_nets(["0.0.0.0/0", "10.0.0.0/8"]) == {"0.0.0.0/1", "128.0.0.0/1"}
    assert canonical_nets(["::/0"]) == {"::/1", "8000::/1"}
    assert canonical_nets(["2001:db8::/64", "2001:db8::5", "10.1.0.0/16"]) == {"2001:db8::/64", "10.1.0.0/16"}


def calc_with_pods(family: IpFamily) -> PolicyCalculator:
    calc = PolicyCalculator("n1", ["eni"], family=family)
    calc.upsert_pod(pod("web", ["10.0.0.5", "2001:db8::5"], app="web"))
    calc.upsert_pod(pod("client", ["10.0.1.7", "2001:db8:1::7"], node="n2", app="client"))
    calc.upsert_policy(netpol("web", ALLOW_CLIENTS_ON_HTTP))
    return calc


def test_each_plane_sees_its_own_family_of_a_dual_stack_pod() -> None:
    six, four = calc_with_pods(V6).desired(), calc_with_pods(V4).desired()
    assert six.family is V6 and four.family is V4
    ((endpoint6,),) = [list(six.endpoints.values())]
    ((endpoint4,),) = [list(four.endpoints.values())]
    assert endpoint6.addresses == ("2001:db8::5/128",) and endpoint4.addresses == ("10.0.0.5/32",)
    members6 = {m for spec in six.ipsets.values() for m in spec.members}
    members4 = {m for spec in four.ipsets.values() for m in spec.members}
    assert members6 == {"2001:db8:1::7/128", "2001:db8::5,tcp:8080", "2001:db8:1::7,tcp:8080"}
    assert members4 == {"10.0.1.7/32", "10.0.0.5,tcp:8080", "10.0.1.7,tcp:8080"}
    # ipset names are one namespace for both families: the planes' sets never share a name
    assert all(n.startswith("vpcn6") for n in six.ipsets) and all(n.startswith("vpcn4") for n in four.ipsets)


def test_an_ipblock_matches_in_its_own_family_only_and_slash_0_works() -> None:
    spec = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "::/0", "except": ["2001:db8:9::/48"]}}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.9.0.0/16"]}}]},
        ],
    }
    for family, allowed, excepted in (
        (V6, {"::/1", "8000::/1"}, {"2001:db8:9::/48"}),
        (V4, {"0.0.0.0/1", "128.0.0.0/1"}, {"10.9.0.0/16"}),
    ):
        calc = PolicyCalculator("n1", ["eni"], family=family)
        calc.upsert_pod(pod("web", ["10.0.0.5", "2001:db8::5"]))
        calc.upsert_policy(netpol("out", spec))
        state = calc.desired()
        ((chain,),) = [list(state.policies.values())]
        (rule,) = chain.rules  # the other family's ipBlock can match nothing here: left out
        (dst,) = rule.dst_sets
        (not_dst,) = rule.not_dst_sets
        assert state.ipsets[dst].members == allowed and state.ipsets[not_dst].members == excepted
        assert rule.spec_index == (0 if family is V6 else 1)


def test_icmp_of_each_family_goes_to_its_plane() -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "pings", "namespace": "default"},
        "spec": {
            "selector": "all()",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Allow", "protocol": "ICMPv6", "ipVersion": 6, "icmp": {"type": 128}},
                {"action": "Allow", "protocol": "ICMP", "ipVersion": 4, "icmp": {"type": 8}},
                {"action": "Deny", "notProtocol": "ICMPv6"},
            ],
        },
    }
    policy = compile_policy(load(doc))
    rules = {}
    for family in (V4, V6):
        calc = PolicyCalculator("n1", ["eni"], family=family)
        calc.upsert_pod(pod("web", ["10.0.0.5", "2001:db8::5"]))
        calc.upsert_policy(policy)
        ((chain,),) = [list(calc.desired().policies.values())]
        rules[family] = [(r.protocol, r.icmp_type, r.not_protocol) for r in chain.rules]
    assert rules[V6] == [("icmp", 128, None), (None, None, "icmp")]  # "icmp" is ICMPv6 in an IPv6 plane
    assert rules[V4] == [("icmp", 8, None), (None, None, "58")]  # not ICMPv6: every IPv4 packet


def test_the_ipv4_egress_plane_of_ipv6_pods() -> None:
    egress = {"default/web": ("169.254.172.9",)}

    def local(p: Pod) -> tuple[str, ...]:
        return egress.get(f"{p.metadata.namespace}/{p.metadata.name}", ())

    calc = PolicyCalculator("n1", ["eni"], family=V4, local_addresses=local)
    calc.upsert_pod(pod("web", ["2001:db8::5"], app="web"))
    calc.upsert_pod(pod("other", ["2001:db8::6"], app="client"))  # local, but no egress address known
    calc.upsert_pod(pod("client", ["2001:db8:1::7"], node="n2", app="client"))
    calc.upsert_policy(netpol("web", ALLOW_CLIENTS_ON_HTTP))
    state = calc.desired()
    (endpoint,) = state.endpoints.values()
    assert endpoint.addresses == ("169.254.172.9/32",)  # the only source it may use over IPv4
    assert [t.policy_ids for t in endpoint.ingress] == [("knp/default/web",)]
    # IPv6 pods have no IPv4 a peer could be named by: the selector sets of this plane are empty
    assert all(not spec.members for spec in state.ipsets.values())
