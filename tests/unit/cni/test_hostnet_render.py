"""The node's SNAT / connmark rules as iptables-restore text (golden)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vpcnet.dataplane.hostnet import HostNetConfig, parse_save, render, render_removal

CFG = HostNetConfig(
    primary_ip=IPv4Address("10.0.1.5"),
    vpc_cidrs=(IPv4Network("10.0.0.0/16"), IPv4Network("100.64.0.0/16")),
    excluded_snat_cidrs=(IPv4Network("172.16.0.0/12"),),
)

GOLDEN = """\
*nat
:AWS-SNAT-CHAIN-0 - [0:0]
:AWS-CONNMARK-CHAIN-0 - [0:0]
-A AWS-SNAT-CHAIN-0 -d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
-A AWS-SNAT-CHAIN-0 -d 100.64.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
-A AWS-SNAT-CHAIN-0 -d 172.16.0.0/12 -m comment --comment "AWS SNAT CHAIN EXCLUSION" -j RETURN
-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL \
-j SNAT --to-source 10.0.1.5 --random-fully
-A AWS-CONNMARK-CHAIN-0 -d 10.0.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN
-A AWS-CONNMARK-CHAIN-0 -d 100.64.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN
-A AWS-CONNMARK-CHAIN-0 -d 172.16.0.0/12 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN
-A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS, CONNMARK" -j CONNMARK --set-xmark 0x80/0x80
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0
-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80
COMMIT
*mangle
:AWS-NODEPORT-CHAIN-0 - [0:0]
-A AWS-NODEPORT-CHAIN-0 -i eth0 -m comment --comment "AWS, primary ENI" -m addrtype --dst-type LOCAL \
--limit-iface-in -j CONNMARK --set-xmark 0x80/0x80
-A AWS-NODEPORT-CHAIN-0 -i eni+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark \
--nfmask 0x80 --ctmask 0x80
-A PREROUTING -m comment --comment "AWS, primary ENI" -j AWS-NODEPORT-CHAIN-0
COMMIT
"""


def test_render_golden() -> None:
    assert render(CFG) == GOLDEN


def test_jumps_already_present_are_not_repeated() -> None:
    saved = render(CFG).replace("COMMIT", "COMMIT\n")
    text = render(CFG, parse_save("\n".join(f"{line}" for line in saved.splitlines())))
    assert "-A POSTROUTING" not in text
    assert "-A PREROUTING" not in text
    assert ":AWS-SNAT-CHAIN-0 - [0:0]" in text  # our chains are always refilled


def test_a_missing_jump_puts_the_tables_jumps_back_in_order() -> None:
    """The restore-mark must follow the connmark jump in PREROUTING: with only the restore present, it is
    deleted and both are added in order (appending the jump alone would put it after the restore)."""
    restore = '-A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x80'
    restore += " --ctmask 0x80"
    saved = parse_save(render(CFG))
    saved["nat"] = {line for line in saved["nat"] if "outbound connections" not in line}
    nat = render(CFG, saved).split("*mangle")[0].splitlines()
    jump = next(i for i, line in enumerate(nat) if "outbound connections" in line)
    assert nat.index("-D" + restore[2:]) < jump < nat.index(restore)


def test_external_snat_empties_snat_and_outbound_connmark() -> None:
    text = render(HostNetConfig(IPv4Address("10.0.1.5"), (IPv4Network("10.0.0.0/16"),), external_snat=True))
    assert "SNAT --to-source" not in text
    assert "AWS-CONNMARK-CHAIN-0 -" not in text.replace(":AWS-CONNMARK-CHAIN-0 - [0:0]", "")
    assert "--limit-iface-in" in text  # node-port connmark stays


def test_custom_prefix_and_interface() -> None:
    cfg = HostNetConfig(IPv4Address("10.0.1.5"), (), primary_interface="ens5", veth_prefix="cali")
    text = render(cfg)
    assert "-i cali+" in text and "-i ens5" in text and "eni+" not in text


def test_removal_deletes_only_what_is_present() -> None:
    present = parse_save(GOLDEN)
    text = render_removal(present, CFG)
    assert '-D POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0' in text
    assert "-X AWS-SNAT-CHAIN-0" in text and "-X AWS-NODEPORT-CHAIN-0" in text
    assert "-D" not in render_removal({}, CFG)


def test_ipv6_pods_get_one_snat_rule_for_their_node_local_ipv4_and_no_connmark() -> None:
    from dataclasses import replace

    from vpcnet.dataplane.hostnet import chain_rules, node_sysctls

    cfg = replace(CFG, ipv6_egress_v4=IPv4Network("169.254.172.0/22"))
    nat = chain_rules(cfg)["nat"]
    assert nat["AWS-SNAT-CHAIN-0"] == [
        '-A AWS-SNAT-CHAIN-0 -s 169.254.172.0/22 -m comment --comment "vpcnet, IPv4 egress of IPv6 pods" '
        "-j SNAT --to-source 10.0.1.5 --random-fully"
    ]
    assert nat["AWS-CONNMARK-CHAIN-0"] == []
    sysctls = dict(node_sysctls(cfg))
    assert sysctls["net/ipv6/conf/all/forwarding"] == "1" and sysctls["net/ipv6/conf/eth0/accept_ra"] == "2"
    assert "net/ipv6/conf/all/forwarding" not in dict(node_sysctls(CFG))
