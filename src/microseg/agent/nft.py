"""Talking to nf_tables: libnftables through ctypes (no process per call), `nft` as the fallback,
and the ruleset generation read straight over netlink.

Fed by the data plane with nft script text; it does not know what the text means. Everything runs
in the network namespace of the calling thread (the agent enters its namespace before anything
else), which is where libnftables and the netlink socket open.

Why ctypes and not Debian's python3-nftables: that module is importable only from Debian's own
interpreter, and it is GPL code we would rather not vendor; the C library's five calls are all we
use. The generation id is what makes the tamper check cheap: the kernel bumps it on every change to
any table of the namespace, so an unchanged id means nothing needs to be listed and compared.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import socket
import struct
import subprocess
import threading
from typing import Any

from microseg import errors

_OUTPUT_STATELESS = 1 << 2
_OUTPUT_JSON = 1 << 4
_OUTPUT_TERSE = 1 << 11
"""Set elements left out of listings: counter reads must not cost as much as the address lists."""


class NftError(errors.MicrosegError):
    """nft refused a command (the kernel transaction was not committed)."""


class _Library:
    """The few libnftables calls we use, typed once."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib


def _load_library() -> _Library | None:
    for name in ("libnftables.so.1", ctypes.util.find_library("nftables")):
        if not name:
            continue
        try:
            return _Library(ctypes.CDLL(name))
        except OSError:
            continue
    return None


class Nft:
    """Runs nft commands in the calling thread's network namespace.

    One context per output style (plain, stateless, JSON, terse), made on first use and reused; a lock
    keeps calls from several threads apart (a context is not thread-safe)."""

    def __init__(self, use_library: bool = True) -> None:
        self._lib = _load_library() if use_library else None
        if self._lib is None and shutil.which("nft") is None:
            raise errors.MicrosegError("nftables is not installed (no libnftables.so.1, no nft command)")
        self._contexts: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """`libnftables` or `nft` (the command)."""
        return "libnftables" if self._lib is not None else "nft"

    def run(self, script: str, *, stateless: bool = False, as_json: bool = False, terse: bool = False) -> str:
        """Run `script` (one transaction); its output. Raises NftError with nft's message."""
        flags = (_OUTPUT_STATELESS if stateless else 0) | (_OUTPUT_JSON if as_json else 0)
        flags |= _OUTPUT_TERSE if terse else 0
        with self._lock:
            if self._lib is None:
                return _run_command(script, stateless, as_json, terse)
            lib = self._lib.lib
            ctx = self._contexts.get(flags)
            if ctx is None:
                ctx = lib.nft_ctx_new(0)
                lib.nft_ctx_buffer_output(ctx)
                lib.nft_ctx_buffer_error(ctx)
                lib.nft_ctx_output_set_flags(ctx, flags)
                self._contexts[flags] = ctx
            rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        if rc != 0:
            raise NftError(err.strip() or f"nft failed ({rc})")
        return out

    def list_table(self, family: str, table: str) -> str | None:
        """The table without counters (`nft -s list table`), or None when it does not exist."""
        try:
            return self.run(f"list table {family} {table}", stateless=True)
        except NftError as exc:
            if "No such file or directory" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    def list_json(self, command: str, *, terse: bool = False) -> list[dict[str, Any]]:
        """`nft -j <command>` (`-t`: without set elements) parsed: the `nftables` array."""
        text = self.run(command, as_json=True, terse=terse)
        return list(json.loads(text)["nftables"]) if text.strip() else []

    def close(self) -> None:
        """Free the contexts."""
        with self._lock:
            if self._lib is not None:
                for ctx in self._contexts.values():
                    self._lib.lib.nft_ctx_free(ctx)
            self._contexts.clear()


def _run_command(script: str, stateless: bool, as_json: bool, terse: bool = False) -> str:
    flags = (["-s"] if stateless else []) + (["-j"] if as_json else []) + (["-t"] if terse else [])
    argv = ["nft", *flags, "-f", "-"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise NftError(done.stderr.strip() or f"nft failed ({done.returncode})")
    return done.stdout


_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETGEN = 16
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NFTA_GEN_ID = 1
_HEADER = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_ATTR = struct.Struct("=HH")


def generation() -> int:
    """The nf_tables ruleset generation of the calling thread's namespace: it changes whenever
    any table, chain, rule, set or element there changes."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        msg_type = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETGEN
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
        sock.send(_HEADER.pack(_HEADER.size + len(body), msg_type, _NLM_F_REQUEST, 1, 0) + body)
        data = sock.recv(65536)
    length, kind, _, _, _ = _HEADER.unpack_from(data, 0)
    if kind == _NLMSG_ERROR:
        code = struct.unpack_from("=i", data, _HEADER.size)[0]
        raise NftError(f"reading the nf_tables generation failed: errno {-code}")
    off = _HEADER.size + _NFGEN.size
    while off + _ATTR.size <= length:
        size, attr = _ATTR.unpack_from(data, off)
        if attr & 0x3FFF == _NFTA_GEN_ID:
            return int(struct.unpack_from("!I", data, off + _ATTR.size)[0])
        off += (size + 3) & ~3
    raise NftError("the nf_tables generation reply carried no id")
