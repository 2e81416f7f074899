"""Headline figures of a benchmark: collected while it runs, printed last as `FIGURE <name> <value>` lines.

The names are stable (the README's Performance section lists them), so runs can be compared by a script."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z0-9_.]+$")


class Figures:
    def __init__(self) -> None:
        self._values: dict[str, float] = {}

    def add(self, name: str, value: float) -> None:
        if not _NAME.match(name):
            raise ValueError(f"figure name {name!r}: lower-case letters, digits, _ and . only")
        self._values[name] = value

    def print(self) -> None:
        for name, value in self._values.items():
            print(f"FIGURE {name} {value:.4g}")
