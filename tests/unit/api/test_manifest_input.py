"""Hostile manifests (issue 14, defect 10): clear errors naming file, document and field, no traceback."""

from __future__ import annotations

import pytest

from vpcnet.api import ValidationError, load_documents, load_files
from vpcnet.api.fields import quote
from vpcnet.api.selector import MAX_NESTING, SelectorError, parse_selector
from vpcnet.api.yamlread import MAX_DEPTH

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
GNP = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n"


def pod(port: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
        f"spec: {{containers: [{{name: c, ports: [{{containerPort: 80, {port}}}]}}]}}\n"
    )


def refused(data: str | bytes, source: str = "m.yaml") -> str:
    with pytest.raises(ValidationError) as info:
        load_documents(data, source)
    return str(info.value)


def test_non_utf8_is_refused_with_its_byte_offset() -> None:
    data = NAMESPACE.encode() + b"---\n" + b"kind: \xff\xfe\n"
    message = refused(data)
    offset = len(NAMESPACE) + 4 + 6
    assert message.startswith("m.yaml: not UTF-8 text")
    assert f"byte offset {offset} (line 5)" in message


def test_a_binary_file_is_refused(tmp_path: object) -> None:
    assert "not UTF-8 text" in refused(bytes(range(256)) * 10)
    assert "not valid YAML" in refused(bytes(range(32)))  # control characters: valid UTF-8, not YAML


def test_load_files_reads_bytes(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "bad.yaml"  # type: ignore[operator]
    path.write_bytes(b"apiVersion: v1\nkind: \xc3\x28\n")
    with pytest.raises(ValidationError, match=r"bad\.yaml: not UTF-8 text: .* at byte offset 21 \(line 2\)"):
        load_files([path])


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 10_000 + "]" * 10_000,
        "{a: " * 10_000 + "1" + "}" * 10_000,
        "\n  " + "- " * 10_000 + "1",  # block style
    ],
)
def test_deep_nesting_is_refused_with_line_and_column(nested: str) -> None:
    message = refused(f"apiVersion: v1\nkind: Namespace\nx: {nested}\n")
    assert message.startswith(("m.yaml:line 3 column ", "m.yaml:line 4 column "))
    assert f"nesting deeper than {MAX_DEPTH} levels" in message


def test_nesting_within_the_limit_is_read() -> None:
    nested = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    message = refused(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\nx: {nested}\n")
    assert "x: unknown field" in message  # parsed all the way to validation


def test_duplicate_keys_are_refused_with_both_places() -> None:
    message = refused(NAMESPACE + "metadata: {name: b}\n")
    assert message.startswith("m.yaml:line 4 column 1: not valid YAML")
    assert "duplicate key 'metadata' (first at line 3 column 1)" in message
    nested = refused("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels: {x: '1', x: '2'}\n")
    assert "duplicate key 'x' (first at line 5 column 12)" in nested


def test_merge_keys_are_still_allowed() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  <<: {name: a}\n  labels: {x: '1'}\n"
    (namespace,) = load_documents(text)
    assert namespace.name == "a"


def test_a_huge_integer_is_an_error_not_a_traceback() -> None:
    message = refused(NAMESPACE + "x: " + "9" * 5000 + "\n")
    assert "m.yaml:line 4 column 4" in message and "cannot read this value" in message


@pytest.mark.parametrize("value", ["-5", "0x10000", "70000", "false", "'80'"])
def test_host_port_out_of_range_is_refused(value: str) -> None:
    message = refused(NAMESPACE + "---\n" + pod(f"hostPort: {value}"))
    assert "(document 2) Pod a/p: spec.containers[0].ports[0].hostPort: must be" in message


def test_host_port_in_range_is_kept() -> None:
    for value in ("1", "8080", "65535", "0"):  # 0: no host port, as in Kubernetes
        _, p = load_documents(NAMESPACE + "---\n" + pod(f"hostPort: {value}"))
        assert p.to_dict()["spec"]["containers"][0]["ports"][0]["hostPort"] == int(value)
    assert "hostIP: invalid IP address" in refused(pod("hostPort: 80, hostIP: nowhere"))


def test_a_huge_value_is_not_echoed_whole() -> None:
    big = "x" * 20_000_000
    message = refused(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: a, labels: {{k: {big}}}}}\n")
    assert len(message) < 400
    assert "metadata.labels.k: invalid label value 'xxxx" in message and "… (20000000 bytes)" in message
    key = refused(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: a, labels: {{{big}: v}}}}\n")
    assert len(key) < 600


def test_quote() -> None:
    assert quote("abc") == "'abc'"
    assert quote("é" * 100) == repr("é" * 64) + "… (200 bytes)"
    assert quote(list(range(100))).endswith("characters)")


def test_a_huge_selector_string_is_not_echoed_whole() -> None:
    big = "v" * 1_000_000
    text = GNP + f"  selector: a == 'b' '{big}'\n"
    message = refused(text)
    assert len(message) < 600 and "spec.selector: invalid selector" in message


def test_selector_nesting_is_bounded() -> None:
    ok = "(" * MAX_NESTING + "a == 'b'" + ")" * MAX_NESTING
    assert str(parse_selector(ok)) == 'a == "b"'
    deep = "(" * 5000 + "a == 'b'" + ")" * 5000
    with pytest.raises(SelectorError, match=f"nested deeper than {MAX_NESTING} levels") as info:
        parse_selector(deep)
    assert info.value.position == MAX_NESTING
    text = GNP + f'  selector: "{deep}"\n'
    message = refused(text)
    assert "GlobalNetworkPolicy g: spec.selector: invalid selector" in message and len(message) < 600


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("protocol", "'²'", "must be one of"),
        ("protocol", "'" + "9" * 5000 + "'", "protocol number must be 1-255"),
        ("destination", "{ports: ['²']}", "must be lowercase alphanumerics"),
        ("destination", "{ports: ['1²:3']}", "invalid port range '1²:3'"),
        ("destination", "{ports: ['" + "9" * 5000 + "']}", "port must be 0-65535, got '9999"),
        ("destination", "{ports: ['1:" + "9" * 5000 + "']}", "need first <= last <= 65535"),
        ("destination", "{nets: ['10.0.0.0/" + "9" * 5000 + "']}", "invalid CIDR '10.0.0.0/999"),
    ],
)
def test_numbers_written_as_text_are_checked_not_crashed_on(field: str, value: str, message: str) -> None:
    rule = (
        f"{{action: Allow, protocol: TCP, {field}: {value}}}"
        if field != "protocol"
        else (f"{{action: Allow, protocol: {value}}}")
    )
    text = GNP + f"  ingress: [{rule}]\n"
    got = refused(text)
    assert message in got and len(got) < 600, got
