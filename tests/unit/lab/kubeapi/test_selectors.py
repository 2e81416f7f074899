"""Label and field selectors in the API's query-string syntax."""

from __future__ import annotations

import pytest

from vpcnet.lab.kubeapi.errors import ApiError
from vpcnet.lab.kubeapi.selectors import make_selector, parse_label_selector

POD = {
    "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web", "tier": "front"}},
    "spec": {"nodeName": "node-a", "hostNetwork": False},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),  # != holds when the label is absent, as in the real server
        ("app in (db, web)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("app notin (web,db)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (web),!missing,tier", True),
        ("", True),
    ],
)
def test_label_selector(text: str, expected: bool) -> None:
    select = make_selector(text, "", "Pod")
    assert (select is None or select(POD)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec.nodeName=node-a", True),
        ("spec.nodeName=node-b", False),
        ("spec.nodeName!=node-b", True),
        ("metadata.name=web-1,metadata.namespace=shop", True),
        ("status.phase==Running", True),
        ("spec.hostNetwork=false", True),
        ("spec.nodeName=", False),
    ],
)
def test_field_selector_on_pods(text: str, expected: bool) -> None:
    select = make_selector("", text, "Pod")
    assert select is not None
    assert select(POD) is expected


def test_unsupported_field_is_a_400_naming_it() -> None:
    with pytest.raises(ApiError) as err:
        make_selector("", "spec.nodeName=a", "ConfigMap")
    assert err.value.code == 400
    assert "spec.nodeName" in err.value.message


@pytest.mark.parametrize("text", ["app=we b", "-bad=x", "a in (x", "app=,"])
def test_bad_label_selector_is_a_400(text: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector(text)
    assert err.value.code == 400
    assert err.value.reason == "BadRequest"
