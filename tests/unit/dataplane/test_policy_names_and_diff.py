"""Kernel names within limits (hashed, never truncated into collisions) and the appliers' diff logic."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcnet.dataplane import ipset_render, names
from vpcnet.dataplane.iptables_apply import parse_save, plan
from vpcnet.dataplane.iptables_render import FilterRender, Hook, with_id
from vpcnet.dataplane.nft_apply import parse_json
from vpcnet.dataplane.policy_state import IpSetSpec, PolicyRule, PortMatch, PortRange


def test_short_names_stay_readable_and_long_ones_are_hashed() -> None:
    assert names.to_workload_chain("eni82111e10a96") == "vpcn-tw-eni82111e10a96"
    long = names.policy_chain("knp/default/allow-web-from-everywhere", "ingress")
    assert long.startswith("vpcn-pi-_") and len(long) == names.IPTABLES_CHAIN_MAX
    assert names.policy_chain("gnp/x", "egress").startswith("vpcn-po-_")  # "/" is not kept readable
    assert names.chain("po-", "plain.name") == "vpcn-po-plain.name"
    with pytest.raises(ValueError, match="interface name"):
        names.to_workload_chain("an-interface-name-too-long")


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60))
def test_distinct_policy_ids_never_share_a_chain(a: str, b: str) -> None:
    if a != b:
        assert names.policy_chain(a, "ingress") != names.policy_chain(b, "ingress")
    assert len(names.policy_chain(a, "ingress")) <= names.IPTABLES_CHAIN_MAX


@given(st.text(min_size=1, max_size=300))
def test_set_names_fit_ipset_and_their_temporaries_too(content: str) -> None:
    for kind in ("s", "n", "p"):
        name = names.ipset_name(kind, content)
        assert len(name) <= names.IPSET_NAME_MAX
        assert len(names.temp_ipset_name(name)) <= names.IPSET_NAME_MAX


def test_bad_rules_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="ports need protocol"):
        PolicyRule("allow", "icmp", dst_ports=PortMatch((PortRange(80, 80),)))
    with pytest.raises(ValueError, match="protocol"):
        PolicyRule("allow", "bogus")
    with pytest.raises(ValueError, match="port range"):
        PortRange(90, 80)


def test_ipset_small_changes_are_add_del_and_big_ones_swap() -> None:
    name = names.ipset_name("s", "x")
    have = {name: ipset_render.KernelSet("hash:net", frozenset({"10.0.0.1/32", "10.0.0.2/32"}))}
    small = {name: IpSetSpec(name, "hash:net", frozenset({"10.0.0.2/32", "10.0.0.3/32"}))}
    assert ipset_render.render_updates(small, have) == [f"del {name} 10.0.0.1/32", f"add {name} 10.0.0.3/32"]
    many = frozenset(f"10.1.{i // 256}.{i % 256}/32" for i in range(200))
    lines = ipset_render.render_updates({name: IpSetSpec(name, "hash:net", many)}, have)
    temp = names.temp_ipset_name(name)
    assert lines[0].startswith(f"create {temp} hash:net") and lines[-2:] == [
        f"swap {temp} {name}",
        f"destroy {temp}",
    ]
    assert ipset_render.render_deletes({}, have) == [f"destroy {name}"]
    saved = (
        f"create {name} hash:net family inet\nadd {name} 10.0.0.1\ncreate other hash:ip\nadd other 1.2.3.4\n"
    )
    assert ipset_render.parse_save(saved) == {
        name: ipset_render.KernelSet("hash:net", frozenset({"10.0.0.1/32"}))
    }


def test_iptables_plan_repairs_only_what_differs_and_keeps_foreign_rules() -> None:
    chain = names.to_workload_chain("eni1")
    rules = (with_id(chain, "-j DROP"),)
    hook = Hook("FORWARD", "insert", with_id("FORWARD", f"-j {names.FORWARD_CHAIN}"))
    desired = FilterRender({chain: rules}, (hook,))
    # The kernel has our chain with a rule missing, a foreign rule above our hook (twice), and a stale chain
    # of ours: the hook goes back to the top, the foreign rule stays.
    save = "\n".join(
        [
            "*filter",
            ":FORWARD ACCEPT [0:0]",
            f":{chain} - [0:0]",
            ":vpcn-tw-gone - [0:0]",
            ":KUBE-FORWARD - [0:0]",
            "-A FORWARD -j KUBE-FORWARD",
            f"-A FORWARD {hook.rule}",
            f"-A FORWARD {hook.rule}",
            "COMMIT",
        ]
    )
    lines = plan(desired, parse_save(save), None)
    assert lines == [
        f":{chain} - [0:0]",
        ":vpcn-tw-gone - [0:0]",
        f"-A {chain} {rules[0]}",
        "-D FORWARD 3",
        "-D FORWARD 2",
        f"-I FORWARD 1 {hook.rule}",
        "-X vpcn-tw-gone",
    ]
    assert not any("KUBE" in line for line in lines)
    # Our hook on top with others below: nothing to do.
    ours_first = save.replace("-A FORWARD -j KUBE-FORWARD\n", "").replace(
        "COMMIT", "-A FORWARD -j KUBE-FORWARD\nCOMMIT"
    )
    assert plan(FilterRender({chain: rules}, (hook,)), parse_save(ours_first), None)[-2:] == [
        "-D FORWARD 2",
        "-X vpcn-tw-gone",
    ]


def test_nft_read_back_normalises_elements() -> None:
    listing = {
        "nftables": [
            {"table": {"family": "ip", "name": "vpcnet"}},
            {"chain": {"name": "vpcn-tw-eni1"}},
            {"rule": {"chain": "vpcn-tw-eni1", "comment": "vpcn:0123456789abcdef note", "expr": []}},
            {
                "set": {
                    "name": "a",
                    "type": "ipv4_addr",
                    "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}],
                }
            },
            {
                "set": {
                    "name": "p",
                    "type": ["ipv4_addr", "inet_proto", "inet_service"],
                    "elem": [{"concat": ["10.0.0.1", 132, 80]}],
                }
            },
            {"map": {"name": "m", "elem": [["eni1", {"goto": {"target": "vpcn-tw-eni1"}}]]}},
        ]
    }
    view = parse_json(json.dumps(listing))
    assert view.chains == {"vpcn-tw-eni1": ("vpcn:0123456789abcdef",)}
    assert view.sets["a"].members == frozenset({"10.0.0.1/32", "10.1.0.0/16"})
    assert view.sets["p"].members == frozenset({"10.0.0.1,sctp:80"})
    assert view.maps["m"] == frozenset({("eni1", "goto vpcn-tw-eni1")})
