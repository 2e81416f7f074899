"""A reachability matrix as SVG (pure): rows are sources, columns destinations, as `print_matrix` prints.

Either matrix alone (`lab probe -o svg`: the kernel's; the console: the policy engine's), or both: then a
cell's colour is the policy engine's verdict and its mark the kernel's, and a cell where they differ gets
a thick border. Every cell is a `<g class="cell">` with data-from, data-to, data-expected and
data-measured ("allow", "deny" or "" when not known), so a test or a page reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

Matrix = Mapping[str, Mapping[str, bool]]
CELL = 26
LINE = 16
ALLOW, DENY, UNKNOWN = "#bfe8c3", "#f4b8b8", "#e8e8e8"


def _word(value: bool | None) -> str:
    return "" if value is None else ("allow" if value else "deny")


def matrix_svg(
    caption: str,
    measured: Matrix | None = None,
    expected: Matrix | None = None,
    label_width: int = 0,
    ignore_loopback: bool = False,
) -> str:
    """The grid for the refs of either matrix (in their order); raises ValueError if given neither.
    ignore_loopback: a pod's traffic to itself is not a disagreement (it never meets policy in the kernel,
    as `vpcnet lab probe --compare` says)."""
    if measured is None and expected is None:
        raise ValueError("a matrix picture needs a measured or an expected matrix")
    refs = list(expected if expected is not None else measured or {})
    for ref in measured or {}:
        if ref not in refs:
            refs.append(ref)
    longest = max((len(f"{i + 1} {r}") for i, r in enumerate(refs)), default=10)
    left = label_width or 20 + 7 * longest
    top = 2 * LINE + CELL
    width = max(left + CELL * len(refs) + 20, 560)  # room for the legend
    height = top + CELL * len(refs) + 3 * LINE
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<text x="10" y="{LINE}" font-weight="bold" class="caption">{escape(caption)}</text>',
    ]
    for j in range(len(refs)):
        x = left + CELL * j + CELL / 2
        out.append(f'<text x="{x:g}" y="{top - 8}" text-anchor="middle" class="col">{j + 1}</text>')
    allowed = 0
    differs = 0
    for i, src in enumerate(refs):
        y = top + CELL * i
        out.append(f'<text x="10" y="{y + CELL / 2 + 4:g}" class="row">{i + 1} {escape(src)}</text>')
        for j, dst in enumerate(refs):
            got = measured.get(src, {}).get(dst) if measured is not None else None
            want = expected.get(src, {}).get(dst) if expected is not None else None
            shown = want if expected is not None else got
            allowed += bool(shown)
            fill = UNKNOWN if shown is None else (ALLOW if shown else DENY)
            disagree = (
                got is not None and want is not None and got != want and not (ignore_loopback and src == dst)
            )
            differs += disagree
            x = left + CELL * j
            stroke = 'stroke="#c00000" stroke-width="3"' if disagree else 'stroke="#ffffff"'
            mark = "" if got is None else ("✓" if got else "✗")
            title = f"{src} -> {dst}: " + ", ".join(
                part
                for part in (
                    f"policy engine {_word(want)}" if want is not None else "",
                    f"kernel {_word(got)}" if got is not None else "",
                )
                if part
            )
            out.append(
                f'<g class="cell{" differs" if disagree else ""}" data-from="{escape(src)}" '
                f'data-to="{escape(dst)}" data-expected="{_word(want)}" data-measured="{_word(got)}">'
                f"<title>{escape(title)}</title>"
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{fill}" {stroke}/>'
                + (
                    f'<text x="{x + CELL / 2:g}" y="{y + CELL / 2 + 5:g}" text-anchor="middle">{mark}</text>'
                    if mark
                    else ""
                )
                + "</g>"
            )
    legend = f"rows: from, columns: to; {allowed} of {len(refs) ** 2} pairs allowed"
    if measured is not None and expected is not None:
        legend += f"; colour: policy engine, mark: kernel; {differs} disagreement(s)"
    out.append(f'<text x="10" y="{top + CELL * len(refs) + 2 * LINE}" class="legend">{escape(legend)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
