"""The Calico selector language: grammar, canonical form, ids, semantics; property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcnet.api.selector import Selector, SelectorError, parse_selector


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", "all()"),
        ("   ", "all()"),
        ("all()", "all()"),
        ("all( )", "all()"),
        ("global()", "global()"),
        ("a == 'b'", 'a == "b"'),
        ('a=="b"', 'a == "b"'),
        ('a != "b"', 'a != "b"'),
        ("has(a)", "has(a)"),
        ("has( a )", "has(a)"),
        ("!has(a)", "!has(a)"),
        ("!!has(a)", "has(a)"),
        ("!!!has(a)", "!has(a)"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
        ("a startswith '\"'", "a starts with '\"'"),
        ("a starts  with 'x'", 'a starts with "x"'),
        ("a endswith 'x'", 'a ends with "x"'),
        ("a contains 'x'", 'a contains "x"'),
        ('a in {"z","z","x","y","x","a"}', 'a in {"a", "x", "y", "z"}'),
        ("a in {}", "a in {}"),
        ("a in {'x',}", 'a in {"x"}'),
        ("a notin {'x'}", 'a not in {"x"}'),
        ("a not in {'x'}", 'a not in {"x"}'),
        ("a == 'b' && c == 'd' || e == 'f'", '((a == "b" && c == "d") || e == "f")'),
        ("a == 'b' && (c == 'd' || e == 'f')", '(a == "b" && (c == "d" || e == "f"))'),
        ("k8s.io/app-name_x == 'v'", 'k8s.io/app-name_x == "v"'),
        ("\ta == 'b'\t", 'a == "b"'),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    assert parse_selector(text).canonical == canonical
    assert parse_selector(canonical).canonical == canonical


def test_unique_ids_match_calico() -> None:
    assert parse_selector("").uid == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert parse_selector("! (has( b)||! has(a ))").uid == "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"
    assert parse_selector('! (a == "b"&&! c != "d")').uid == "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("a = 'b'", 2),
        ("a == b", 5),
        ("a == 'b", 5),
        ("a & b", 2),
        ("a | b", 2),
        ("(a == 'b'", 9),
        ("a == 'b')", 8),
        ("a == 'b' &&", 11),
        ("has()", 4),
        ("has(a", 5),
        ("all(x)", 4),
        ("a", 1),
        ("a b", 2),
        ("'a' == b", 0),
        ("a in 'x'", 5),
        ("a in {'x' 'y'}", 10),
        ("a == 'b'\n", 8),
        ("a startsx 'b'", 2),
        ("a == 'b' c == 'd'", 9),
        ("$", 0),
        ("x" * 513 + " == 'a'", 0),
    ],
)
def test_invalid_selectors_report_the_position(text: str, position: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert info.value.position == position, info.value
    assert "^" in info.value.pointer()


LABELS = {"app": "web", "tier": "front-end", "env": "prod"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app == 'web'", True),
        ("app == 'db'", False),
        ("missing == 'x'", False),
        ("app != 'db'", True),
        ("app != 'web'", False),
        ("missing != 'x'", True),  # != matches when the label is absent
        ("app in {'web', 'db'}", True),
        ("missing in {'x'}", False),
        ("app not in {'web'}", False),
        ("missing not in {'x'}", True),  # not in matches when the label is absent
        ("has(app)", True),
        ("!has(app)", False),
        ("has(missing)", False),
        ("tier contains 'nt-e'", True),
        ("missing contains ''", False),
        ("tier starts with 'front'", True),
        ("tier ends with 'end'", True),
        ("tier ends with 'front'", False),
        ("app == 'web' && env == 'prod'", True),
        ("app == 'web' && env == 'dev'", False),
        ("app == 'db' || env == 'prod'", True),
        ("!(app == 'db' || env == 'dev')", True),
        ("!app == 'web'", False),
        ("all()", True),
        ("global()", True),
        ("", True),
    ],
)
def test_semantics(text: str, expected: bool) -> None:
    sel = parse_selector(text)
    assert sel.matches(LABELS) is expected
    assert sel.root.matches(LABELS) is expected


# ------------------------------------------------------------------------------------------------
# Property tests

label = st.text(alphabet="abcxyz./-_019", min_size=1, max_size=8)
value = st.text(alphabet="abcxyz 01'-_.", max_size=6).filter(lambda v: '"' not in v)


def _quoted(v: str) -> str:
    return f"'{v}'" if '"' in v else f'"{v}"'


@st.composite
def selector_texts(draw: st.DrawFn, depth: int = 3) -> str:
    kind = draw(st.integers(0, 9 if depth > 0 else 6))
    ws = draw(st.sampled_from(["", " ", "  ", "\t"]))
    if kind == 0:
        return f"has({ws}{draw(label)}{ws})"
    if kind == 1:
        return draw(st.sampled_from(["all()", "global()", "all( )"]))
    if kind in (2, 3):
        op = draw(st.sampled_from(["==", "!=", "contains", "starts with", "ends with", "startswith"]))
        return f"{draw(label)}{ws} {op}{ws}{_quoted(draw(value))}"
    if kind in (4, 5):
        op = draw(st.sampled_from(["in", "not in", "notin"]))
        vals = draw(st.lists(value, max_size=3))
        return f"{draw(label)} {op} {{{', '.join(map(_quoted, vals))}}}"
    if kind == 6:
        return "!" * draw(st.integers(1, 3)) + draw(selector_texts(depth=0))
    if kind == 7:
        return f"({ws}{draw(selector_texts(depth=depth - 1))}{ws})"
    sep = "&&" if kind == 8 else "||"
    parts = draw(st.lists(selector_texts(depth=depth - 1), min_size=2, max_size=3))
    return f"{ws}{sep}{ws}".join(parts)


label_maps = st.dictionaries(label, st.text(alphabet="abcxyz01'-_. ", max_size=5), max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_parser_never_crashes(text: str) -> None:
    try:
        sel = parse_selector(text)
    except SelectorError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse_selector(sel.canonical) == sel


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab()!&|=' \"{},inotswhcl", max_size=30))
def test_parser_never_crashes_on_grammar_soup(text: str) -> None:
    test_parser_never_crashes.hypothesis.inner_test(text)  # type: ignore[attr-defined]


@settings(max_examples=400, deadline=None)
@given(selector_texts(), label_maps)
def test_parse_print_parse_is_identical_and_keeps_meaning(text: str, labels: dict[str, str]) -> None:
    sel = parse_selector(text)
    again = parse_selector(sel.canonical)
    assert again == sel
    assert again.canonical == sel.canonical
    assert again.uid == sel.uid
    assert sel.matches(labels) == sel.root.matches(labels) == again.matches(labels)


@settings(max_examples=150, deadline=None)
@given(selector_texts(), st.lists(label_maps, min_size=1, max_size=8))
def test_label_index_evaluation_equals_direct_evaluation(
    text: str, pods_labels: list[dict[str, str]]
) -> None:
    """The matrix evaluates selectors over a label index; it must agree with the closures."""
    from vpcnet.api.base import ObjectMeta
    from vpcnet.api.core import Container, Pod
    from vpcnet.policy.matrix import PodIndex
    from vpcnet.policy.state import ClusterState

    pods = [
        Pod(
            ObjectMeta(name=f"p{i}", namespace="n", labels=labels),
            [Container("c")],
            pod_ips=[f"10.0.0.{i + 1}"],
        )
        for i, labels in enumerate(pods_labels)
    ]
    state = ClusterState.from_resources(pods)
    index = PodIndex(state)
    sel = parse_selector(text)
    bits = index.label_bits(sel)
    for i, pod in enumerate(index.pods):
        assert bool(bits >> i & 1) == sel.matches(state.endpoint_labels(pod)), (text, pod.metadata.labels)


# ------------------------------------------------------------------------------------------------
# Kubernetes label selectors (apimachinery Requirement.Matches), and their Calico translation


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        ("In", ("a", "b"), {"k": "a"}, True),
        ("In", ("a", "b"), {"k": "c"}, False),
        ("In", ("a",), {}, False),  # In needs the key
        ("NotIn", ("a",), {"k": "b"}, True),
        ("NotIn", ("a",), {"k": "a"}, False),
        ("NotIn", ("a",), {}, True),  # NotIn matches when the key is absent
        ("NotIn", ("",), {"k": ""}, False),
        ("Exists", (), {"k": ""}, True),
        ("Exists", (), {}, False),
        ("DoesNotExist", (), {}, True),
        ("DoesNotExist", (), {"k": "x"}, False),
    ],
)
def test_kubernetes_requirements_as_apimachinery(
    operator: str, values: tuple[str, ...], labels: dict[str, str], expected: bool
) -> None:
    from vpcnet.api.networking import LabelSelector, LabelSelectorRequirement

    req = LabelSelectorRequirement("k", operator, values)
    assert req.matches(labels) is expected
    assert Selector(req.to_node()).matches(labels) is expected
    both = LabelSelector.of({"app": "web"}, req)
    assert both.matches({**labels, "app": "web"}) is expected
    assert not both.matches({**labels, "app": "db"}) and not both.matches(labels)  # matchLabels ANDed
    assert Selector(both.to_node()).matches({**labels, "app": "web"}) is expected
    assert LabelSelector().matches(labels) and LabelSelector().is_empty  # empty selects everything


def test_kubernetes_match_labels_with_an_empty_value() -> None:
    from vpcnet.api.networking import LabelSelector

    sel = LabelSelector.of({"k": ""})
    assert sel.matches({"k": ""}) and not sel.matches({}) and not sel.matches({"k": "x"})
    assert Selector(sel.to_node()).matches({"k": ""}) and not Selector(sel.to_node()).matches({})
