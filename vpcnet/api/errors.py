"""One error type for invalid resources: every fault, with its document and field path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One problem in one document.

    `document` names the document as "<source>:<index> <Kind> <ns>/<name>" (index counts from 0,
    kind and name as far as they could be read); `path` is the field path in the usual Kubernetes
    style, e.g. ``spec.ingress[0].from[1].ipBlock.cidr``.
    """

    document: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.document}: {self.path}" if self.path else self.document
        return f"{where}: {self.message}"


class ValidationError(ValueError):
    """Raised when input is invalid; nothing was applied. `faults` lists every problem found."""

    def __init__(self, faults: Iterable[Fault]) -> None:
        self.faults = tuple(faults)
        super().__init__(self._text())

    def _text(self) -> str:
        if len(self.faults) == 1:
            return str(self.faults[0])
        lines = [f"{len(self.faults)} problems:"]
        lines += [f"  {fault}" for fault in self.faults]
        return "\n".join(lines)
