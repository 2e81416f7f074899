"""The native fast-path client (vpcnet/cni/native/vpcnet-cni.c): find or build it, then stamp it for one node.

The C client is built once with no options; it carries three slots (the interpreter, the shim's directory,
the agent's socket) that `stamp` fills in the installed copy. So the image can ship one prebuilt binary
(`vpcnet-cni-native`), and a node without a compiler still gets the fast path. Where the binary comes from,
first found wins: an explicit path (`install-cni --native-binary`), VPCNET_CNI_NATIVE_BINARY, a file
`vpcnet-cni-native` beside this package (vpcnet/cni/native/), /usr/lib/vpcnet/vpcnet-cni-native, and last a
compile with the node's `cc`.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

NATIVE_DIR = Path(__file__).with_name("native")
SOURCE = NATIVE_DIR / "vpcnet-cni.c"
PREBUILT_NAME = "vpcnet-cni-native"
PREBUILT_ENV = "VPCNET_CNI_NATIVE_BINARY"
PREBUILT_PATHS = (NATIVE_DIR / PREBUILT_NAME, Path("/usr/lib/vpcnet") / PREBUILT_NAME)
SLOT_SIZE = 512  # SLOT_SIZE in the C source
SLOTS = ("python", "shim_dir", "socket")


class NativeBuildError(RuntimeError):
    """No usable native client: none prebuilt, none compiled, or one that cannot be stamped or run."""


def marker(slot: str) -> bytes:
    return f"@VPCNET-SLOT:{slot}@".encode()


def check_value(slot: str, value: str) -> bytes:
    """A value the client can hold: it fills a fixed slot and, for the fallback, a Python string literal."""
    if any(ch in value for ch in "'\"\\\n\0"):
        raise NativeBuildError(f"{slot} {value!r} cannot contain quotes, backslashes, newlines or NULs")
    data = value.encode()
    if len(data) >= SLOT_SIZE:
        raise NativeBuildError(f"{slot} {value!r} is longer than {SLOT_SIZE - 1} bytes")
    return data


def stamp(binary: bytes, values: dict[str, str]) -> bytes:
    """The binary with each slot's marker and padding replaced by its value (NUL-padded to the slot)."""
    out = bytearray(binary)
    for slot in SLOTS:
        data = check_value(slot, values[slot])
        mark = marker(slot)
        at = out.find(mark)
        if at < 0 or out.find(mark, at + 1) >= 0:
            raise NativeBuildError(
                f"the native client has no single {slot} slot (built with an old source, or not vpcnet-cni.c)"
            )
        if any(out[at + len(mark) : at + SLOT_SIZE]):
            raise NativeBuildError(f"the native client's {slot} slot is not {SLOT_SIZE} bytes")
        out[at : at + SLOT_SIZE] = data.ljust(SLOT_SIZE, b"\0")
    return bytes(out)


def compile_client(out: Path, compiler: str | None = None) -> Path:
    """Compile vpcnet-cni.c (static if the C library allows) into out, unstamped."""
    cc = compiler or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NativeBuildError("no C compiler (cc) found and no prebuilt vpcnet-cni-native")
    errors = ""
    for static in (["-static"], []):
        argv = [cc, "-O2", "-Wall", *static, "-o", str(out), str(SOURCE)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return out
        errors = proc.stderr.strip()
    raise NativeBuildError(f"compiling {SOURCE} failed: {errors[-500:]}")


def prebuilt(explicit: Path | None = None) -> Path | None:
    """The prebuilt client to use, if any; an explicit path (or the variable) that is missing is an error."""
    given = explicit or (Path(os.environ[PREBUILT_ENV]) if os.environ.get(PREBUILT_ENV) else None)
    if given is not None:
        if not given.is_file():
            raise NativeBuildError(f"the native client {str(given)!r} does not exist")
        return given
    return next((path for path in PREBUILT_PATHS if path.is_file()), None)


_compiled: list[bytes] = []  # this process's compile, kept: it is the same for every node
_compile_lock = threading.Lock()


def client_bytes(explicit: Path | None = None) -> tuple[bytes, str]:
    """The unstamped client and where it came from: prebuilt if there is one, else compiled (once per
    process: `lab up` installs on every node at once, and one compile serves them all)."""
    found = prebuilt(explicit)
    if found is not None:
        return found.read_bytes(), str(found)
    with _compile_lock:
        if not _compiled:
            with tempfile.TemporaryDirectory(prefix="vpcnet-cni-build-") as tmp:
                _compiled.append(compile_client(Path(tmp) / PREBUILT_NAME).read_bytes())
    return _compiled[0], f"compiled from {SOURCE}"


def smoke_test(path: Path) -> None:
    """Run the stamped client once (VERSION, which it hands to the Python shim): a binary for another
    architecture or C library, or a broken interpreter path, fails here rather than on every pod."""
    for attempt in range(50):
        try:
            proc = subprocess.run(
                [str(path)], input=b"", env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30
            )
            break
        except OSError as exc:
            # ETXTBSY: a fork in another thread (installs run in parallel) still holds the file open for
            # writing until its exec closes it; that passes in a moment.
            if exc.errno != errno.ETXTBSY or attempt == 49:
                raise NativeBuildError(f"the native client {path} does not run: {exc}") from None
            time.sleep(0.02)
        except subprocess.TimeoutExpired as exc:
            raise NativeBuildError(f"the native client {path} does not run: {exc}") from None
    if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
        shown = (proc.stdout + proc.stderr).decode(errors="replace")[:300]
        raise NativeBuildError(f"the native client {path} answered VERSION with {proc.returncode}: {shown}")
