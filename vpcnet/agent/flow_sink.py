"""The flow log's file: JSON lines, rotated by size, keeping a set number of old files (path.1 newest).

Like logrotate's "rotate N" with "size": when a write would take the file past max_bytes, path.N-1 moves
to path.N (the oldest is dropped), ..., path to path.1, and a new path starts. Disk use is bounded by
(files + 1) * max_bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any


class RotatingJsonLines:
    def __init__(self, path: Path, max_bytes: int, files: int) -> None:
        if max_bytes < 1 or files < 1:
            raise ValueError(f"flow log file: max_bytes {max_bytes} and files {files} must be 1 or more")
        self.path = path
        self.max_bytes = max_bytes
        self.files = files
        self._out: IO[bytes] | None = None
        self._size = 0

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        if not data:
            return
        out = self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
            out = self._open()
        out.write(data)
        out.flush()
        self._size += len(data)

    def _open(self) -> IO[bytes]:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.path, "ab")  # noqa: SIM115 (kept open across writes)
            self._size = self._out.tell()
        return self._out

    def _rotate(self) -> None:
        self.close()
        for index in range(self.files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self._size = 0
