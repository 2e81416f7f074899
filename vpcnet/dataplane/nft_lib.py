"""nftables commands through libnftables (the library behind `nft`), kept open in the process.

An `nft -f -` per change costs a fork, an exec and the loading of nft's libraries (several milliseconds on an
idle machine, tens on a loaded one); libnftables through ctypes costs the transaction itself. It answers the
same CommandRunner calls the nft applier makes (`nft -f -`, `nft -j list table ...`, `nft delete table ...`)
with the same results as the binary (exit status, output, the error text nft prints), so the applier and
its error reports do not know which one ran. Where Debian's libnftables.so.1 cannot be loaded, every call
goes to the runner it was given (the `nft` binary).

The library is not thread-safe and a context must stay in one network namespace, so each NftLib owns one
worker thread holding its context; a NftLib for a named namespace moves its thread into it for good and must
be closed (its thread keeps the namespace alive).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
from collections.abc import Sequence

from vpcnet.dataplane import nsenter
from vpcnet.dataplane.kernel_cmd import CommandResult, CommandRunner, SubprocessRunner

LIBRARY = "libnftables.so.1"
# What goes to the binary even when the library is loaded: listings (a resync's read of the whole table) and
# transactions over this size (a first apply, a resync's rewrite). Rare, and libnftables keeps what they
# parse and list in its context's cache, and malloc keeps the freed memory in the worker thread's arena: tens
# of MB for a node of 400 pods and 1,000 policies. A process frees all of it when it exits.
LARGE = 64 * 1024
_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON (nftables/libnftables.h)
log = logging.getLogger("vpcnet.dataplane.nft_lib")


def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as err:
        log.info("%s not loadable (%s): nft commands run the nft binary", LIBRARY, err)
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


class NftLib:
    """A CommandRunner for the nft commands of the applier, through one libnftables context."""

    def __init__(self, fallback: CommandRunner, netns: str | None = None) -> None:
        self.fallback = fallback
        self.netns = netns
        self.calls = 0  # commands the library ran (not the fallback)
        self._lib = _load()
        self._ctx: int | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        if self._lib is None:
            return
        path = f"/run/netns/{netns}" if netns else None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="nftlib",
            initializer=(lambda: nsenter.enter_for_good(path)) if path else None,
        )
        lib = self._lib
        ctx = self._pool.submit(lib.nft_ctx_new, 0).result()
        if not ctx:
            raise OSError(f"{LIBRARY}: nft_ctx_new failed")
        self._pool.submit(lib.nft_ctx_buffer_output, ctx).result()
        self._pool.submit(lib.nft_ctx_buffer_error, ctx).result()
        self._ctx = int(ctx)

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    def run_text(self, text: bytes) -> tuple[int, bytes, bytes]:
        """Run nft commands (`nft -f` input) for a caller outside an event loop: (status, out, err)."""
        if self._pool is None:
            raise RuntimeError(f"{LIBRARY} is not loaded (or closed): run the nft binary instead")
        self.calls += 1
        return self._pool.submit(self._run, text, False).result()

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        command = self._command(argv, stdin)
        if command is None or self._pool is None or command[1] or len(command[0]) > LARGE:
            return await self.fallback.run(argv, stdin)
        text, as_json = command
        self.calls += 1
        loop = asyncio.get_running_loop()
        rc, out, err = await loop.run_in_executor(self._pool, self._run, text, as_json)
        return CommandResult(tuple(argv), rc, out, err)

    @staticmethod
    def _command(argv: Sequence[str], stdin: bytes | None) -> tuple[bytes, bool] | None:
        """(the text libnftables runs, JSON output or not) for an nft command line; None: not one it takes."""
        if not argv or argv[0] != "nft":
            return None
        args = list(argv[1:])
        as_json = args[:1] == ["-j"]
        if as_json:
            args = args[1:]
        if args == ["-f", "-"]:
            return (stdin or b""), as_json
        if not args or any(a.startswith("-") for a in args):
            return None
        return " ".join(args).encode(), as_json

    def _run(self, text: bytes, as_json: bool) -> tuple[int, bytes, bytes]:
        lib, ctx = self._lib, self._ctx
        assert lib is not None and ctx is not None
        flags = lib.nft_ctx_output_get_flags(ctx)
        wanted = flags | _OUTPUT_JSON if as_json else flags & ~_OUTPUT_JSON
        if wanted != flags:
            lib.nft_ctx_output_set_flags(ctx, wanted)
        rc = lib.nft_run_cmd_from_buffer(ctx, text)
        # Reading a buffer hands it over and starts the next one empty.
        out = lib.nft_ctx_get_output_buffer(ctx) or b""
        err = lib.nft_ctx_get_error_buffer(ctx) or b""
        return (1 if rc else 0), bytes(out), bytes(err)

    def close(self) -> None:
        if self._pool is None:
            return
        lib, ctx = self._lib, self._ctx
        if lib is not None and ctx is not None:
            self._pool.submit(lib.nft_ctx_free, ctx).result()
        self._ctx = None
        self._pool.shutdown(wait=True)
        self._pool = None


_shared: NftLib | None = None
_shared_lock = threading.Lock()


def runner_for(runner: CommandRunner) -> CommandRunner:
    """What the nft applier should run its commands through: the process's own libnftables context when
    runner runs commands here (the agent: a SubprocessRunner of no namespace), else runner itself (a named
    namespace, or a runner a test wraps, keeps the binary). One context per process, never closed."""
    global _shared
    if not isinstance(runner, SubprocessRunner) or runner.netns is not None:
        return runner
    with _shared_lock:
        if _shared is None:
            _shared = NftLib(SubprocessRunner())
    return _shared if _shared.loaded else runner
