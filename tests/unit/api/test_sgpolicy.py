"""SecurityGroupPolicy: validation with field paths, and which pods a policy selects."""

from __future__ import annotations

import pytest

from vpcnet.api import SecurityGroupPolicy, ValidationError, load_documents
from vpcnet.api.sgpolicy import pod_security_groups

DOC = """
apiVersion: vpcresources.k8s.aws/v1beta1
kind: SecurityGroupPolicy
metadata: {name: %s, namespace: shop}
spec:
  %s
  securityGroups: {groupIds: %s}
"""


def _policy(name: str, selectors: str, groups: str) -> SecurityGroupPolicy:
    (policy,) = load_documents(DOC % (name, selectors, groups))
    assert isinstance(policy, SecurityGroupPolicy)
    return policy


def test_pod_selector_account_selector_and_both() -> None:
    by_pod = _policy("a", "podSelector: {matchLabels: {app: web}}", "[sg-0123456789abcdef0]")
    by_account = _policy("b", "serviceAccountSelector: {matchLabels: {team: pay}}", "[sg-11111111]")
    both = _policy(
        "c",
        "podSelector: {matchLabels: {app: web}}\n  serviceAccountSelector: {matchLabels: {team: pay}}",
        "[sg-22222222, sg-11111111]",
    )
    web, pay = {"app": "web"}, {"team": "pay"}
    assert by_pod.selects("shop", web, {}) and not by_pod.selects("other", web, {})
    assert by_account.selects("shop", {}, pay) and not by_account.selects("shop", web, {})
    assert both.selects("shop", web, pay) and not both.selects("shop", web, {})
    # Several policies: the union, each group once, in policy-name order.
    assert pod_security_groups([both, by_account, by_pod], "shop", web, pay) == (
        "sg-0123456789abcdef0",
        "sg-11111111",
        "sg-22222222",
    )
    assert pod_security_groups([by_pod, by_account], "shop", {"app": "db"}, {}) == ()


def test_round_trip() -> None:
    policy = _policy("a", "podSelector: {}", "[sg-0123456789abcdef0]")
    assert policy.to_dict()["spec"] == {
        "securityGroups": {"groupIds": ["sg-0123456789abcdef0"]},
        "podSelector": {},
    }
    assert policy.selects("shop", {"any": "thing"}, {})  # an empty pod selector: every pod


@pytest.mark.parametrize(
    ("selectors", "groups", "where"),
    [
        ("podSelector: {}", "[]", "spec.securityGroups.groupIds"),
        ("podSelector: {}", "[web]", "spec.securityGroups.groupIds[0]"),
        ("{}", "[sg-11111111]", "spec"),
        ("podSelector: {matchLabels: {app: 7}}", "[sg-11111111]", "spec.podSelector.matchLabels"),
    ],
)
def test_bad_policies_name_the_field(selectors: str, groups: str, where: str) -> None:
    text = DOC % ("bad", selectors if selectors != "{}" else "", groups)
    with pytest.raises(ValidationError) as err:
        load_documents(text)
    assert where in str(err.value)


def test_pod_eni_annotation_round_trip_and_errors() -> None:
    from ipaddress import IPv4Address, IPv4Network

    from vpcnet.api.sgpolicy import PodEni

    eni = PodEni("eni-1", "0a:00:00:00:00:01", IPv4Address("10.0.0.9"), 3, IPv4Network("10.0.0.0/20"))
    raw = eni.annotation()
    assert raw == (
        '[{"eniId":"eni-1","ifAddress":"0a:00:00:00:00:01","privateIp":"10.0.0.9","vlanId":3,'
        '"subnetCidr":"10.0.0.0/20"}]'
    )
    assert PodEni.parse(raw) == eni
    for bad, says in (
        ("{", "not JSON"),
        ("[]", "expected a list"),
        (
            '[{"eniId":"e","ifAddress":"m","privateIp":"10.0.0.1","subnetCidr":"10.0.0.0/24"}]',
            "vlanId is missing",
        ),
        (raw.replace('"vlanId":3', '"vlanId":5000'), "not a VLAN id"),
        (raw.replace("10.0.0.9", "ten"), r"pod-eni\[0\]: .*'ten'"),
    ):
        with pytest.raises(ValueError, match=says):
            PodEni.parse(bad)
