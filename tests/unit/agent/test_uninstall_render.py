"""vpcnet uninstall's iptables removal, from iptables-save text: ours (vpcn-*, the host network's AWS chains,
their jumps, the connmark restore rule) and nothing else."""

from __future__ import annotations

from vpcnet.agent.uninstall import RESTORE_MARK_RULE, Removed, ours_chain, ours_ipset, removal_input

NAT = f"""*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AWS-SNAT-CHAIN-0 - [0:0]
:vpcn-nat-outgoing - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0
{RESTORE_MARK_RULE}
-A PREROUTING -m comment --comment "other, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x40 --ctmask 0x40
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A POSTROUTING -j vpcn-nat-outgoing
-A POSTROUTING -j KUBE-POSTROUTING
-A AWS-SNAT-CHAIN-0 -d 10.0.0.0/16 -j RETURN
-A vpcn-nat-outgoing -s 10.9.0.0/16 -j MASQUERADE
COMMIT
"""


def test_only_our_chains_and_the_rules_into_them_are_removed() -> None:
    data, rules, chains = removal_input(NAT, "nat")
    assert chains == ["AWS-SNAT-CHAIN-0", "vpcn-nat-outgoing"]
    assert len(rules) == 4 and RESTORE_MARK_RULE in rules
    assert not any("KUBE-" in r or "0x40" in r for r in rules)
    lines = data.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "-D POSTROUTING -j vpcn-nat-outgoing" in lines and "-X vpcn-nat-outgoing" in lines
    assert not any("KUBE-" in line for line in lines)
    # the rules go before the chains they jump to; a chain is emptied before it is deleted
    assert max(i for i, line in enumerate(lines) if line.startswith("-D")) < lines.index(
        ":AWS-SNAT-CHAIN-0 - [0:0]"
    )
    assert lines.index(":AWS-SNAT-CHAIN-0 - [0:0]") < lines.index("-X AWS-SNAT-CHAIN-0")


def test_the_restore_rule_counts_only_in_nat_and_a_clean_table_needs_nothing() -> None:
    assert (
        removal_input(f"*mangle\n:PREROUTING ACCEPT [0:0]\n{RESTORE_MARK_RULE}\nCOMMIT\n", "mangle")[0] == ""
    )
    assert removal_input(
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n", "filter"
    ) == (
        "",
        [],
        [],
    )


def test_names_that_are_ours() -> None:
    assert ours_chain("vpcn-FORWARD") and ours_chain("AWS-NODEPORT-CHAIN-0") and not ours_chain("AWS-OTHER")
    assert not ours_chain("KUBE-SERVICES") and not ours_chain("cali-FORWARD")
    assert ours_ipset("vpcn4s-abc") and ours_ipset("vpcn6n-abc") and not ours_ipset("cali40all-hosts")
    assert Removed(files=["/x"], ipsets=["vpcn4s-a"]).lines() == [
        "removed file: /x",
        "removed ipset: vpcn4s-a",
    ]


FILTER6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:VPCNET-POD-FENCE - [0:0]
-A INPUT -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
-A FORWARD -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
-A FORWARD -j KUBE-FORWARD
-A VPCNET-POD-FENCE -d fd00:ec2::254/128 -p tcp -j REJECT --reject-with tcp-reset
COMMIT
"""


def test_the_pod_fence_chain_and_its_jumps_are_removed() -> None:
    data, rules, chains = removal_input(FILTER6, "filter")
    assert chains == ["VPCNET-POD-FENCE"] and len(rules) == 2
    assert "-X VPCNET-POD-FENCE" in data.splitlines() and "KUBE-FORWARD" not in data
