"""The matrix picture: one matrix, or the kernel's beside the policy engine's, read back cell by cell."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vpcnet.cli.matrix_picture import matrix_svg

SVG = "{http://www.w3.org/2000/svg}"
MEASURED = {"x/a": {"x/a": True, "x/b": False}, "x/b": {"x/a": True, "x/b": True}}
EXPECTED = {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": False, "x/b": True}}


def cells(svg: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(SVG + "g"):
        if "cell" in (g.get("class") or "").split():
            out[(str(g.get("data-from")), str(g.get("data-to")))] = (
                str(g.get("data-expected")),
                str(g.get("data-measured")),
                g.get("class") or "",
            )
    return out


def test_the_kernels_matrix_alone() -> None:
    svg = matrix_svg("TCP/80", MEASURED)
    got = cells(svg)
    assert got[("x/a", "x/b")] == ("", "deny", "cell")
    assert got[("x/b", "x/a")] == ("", "allow", "cell")
    assert len(got) == 4
    root = ET.fromstring(svg)
    rows = [t.text for t in root.iter(SVG + "text") if t.get("class") == "row"]
    assert rows == ["1 x/a", "2 x/b"]
    legend = next(t.text for t in root.iter(SVG + "text") if t.get("class") == "legend")
    assert legend == "rows: from, columns: to; 3 of 4 pairs allowed"


def test_both_matrices_mark_where_they_differ() -> None:
    got = cells(matrix_svg("TCP/80", MEASURED, EXPECTED))
    assert got[("x/a", "x/b")] == ("allow", "deny", "cell differs")
    assert got[("x/b", "x/a")] == ("deny", "allow", "cell differs")
    assert got[("x/a", "x/a")] == ("allow", "allow", "cell")
    root = ET.fromstring(matrix_svg("TCP/80", MEASURED, EXPECTED))
    legend = next(t.text for t in root.iter(SVG + "text") if t.get("class") == "legend")
    assert legend is not None and legend.endswith("2 disagreement(s)")


def test_the_engines_matrix_alone_has_no_marks() -> None:
    root = ET.fromstring(matrix_svg("TCP/80", None, EXPECTED))
    cell = next(g for g in root.iter(SVG + "g") if g.get("data-from") == "x/b" and g.get("data-to") == "x/a")
    assert cell.get("data-measured") == "" and cell.find(SVG + "text") is None
    assert cell.find(SVG + "rect") is not None and cell.find(SVG + "rect").get("fill") == "#f4b8b8"  # type: ignore[union-attr]


def test_no_matrix_is_an_error() -> None:
    with pytest.raises(ValueError, match="measured or an expected"):
        matrix_svg("TCP/80")


def test_a_pods_traffic_to_itself_can_be_left_out_of_the_disagreements() -> None:
    expected = {"x/a": {"x/a": False}}
    measured = {"x/a": {"x/a": True}}
    assert cells(matrix_svg("TCP/80", measured, expected))[("x/a", "x/a")][2] == "cell differs"
    assert cells(matrix_svg("TCP/80", measured, expected, ignore_loopback=True))[("x/a", "x/a")][2] == "cell"
