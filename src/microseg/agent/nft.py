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

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from microseg import errors
from microseg.agent import heap, netlink

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

    A context per call, freed when it returns: a context keeps the ruleset cache it fetched (every
    set element) until it is freed, and the contexts of the three output styles the agent uses,
    kept for reuse, held 14 MB at 5,000 peers; a context costs about 40 us to make. A lock keeps
    calls from several threads apart, so at most one context (one cache) exists at a time."""

    def __init__(self, use_library: bool = True) -> None:
        self._lib = _load_library() if use_library else None
        if self._lib is None and shutil.which("nft") is None:
            raise errors.MicrosegError("nftables is not installed (no libnftables.so.1, no nft command)")
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
            ctx = lib.nft_ctx_new(0)
            try:
                lib.nft_ctx_buffer_output(ctx)
                lib.nft_ctx_buffer_error(ctx)
                lib.nft_ctx_output_set_flags(ctx, flags)
                rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
                out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
            finally:
                lib.nft_ctx_free(ctx)
            heap.trim()  # freed, the cache would still count in the agent's RSS: glibc keeps it
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
        """Nothing to free (no context outlives its call); kept so that callers need not know."""


def _run_command(script: str, stateless: bool, as_json: bool, terse: bool = False) -> str:
    flags = (["-s"] if stateless else []) + (["-j"] if as_json else []) + (["-t"] if terse else [])
    argv = ["nft", *flags, "-f", "-"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise NftError(done.stderr.strip() or f"nft failed ({done.returncode})")
    return done.stdout


_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETGEN = 16
_NFTA_GEN_ID = 1


@contextlib.contextmanager
def _asked(msg_type: int, flags: int, body: bytes, timeout: float) -> Iterator[socket.socket]:
    """A netfilter netlink socket of the calling thread's namespace that has sent one nf_tables
    request (`msg_type` of the nftables subsystem, `body` after the header)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        kind = (_NFNL_SUBSYS_NFTABLES << 8) | msg_type
        sock.send(netlink.NLMSG.pack(netlink.NLMSG.size + len(body), kind, flags, 1, 0) + body)
        yield sock


def generation() -> int:
    """The nf_tables ruleset generation of the calling thread's namespace: it changes whenever
    any table, chain, rule, set or element there changes."""
    body = netlink.NFGEN.pack(socket.AF_UNSPEC, 0, 0)
    with _asked(_NFT_MSG_GETGEN, netlink.NLM_F_REQUEST, body, 2.0) as sock:
        data = sock.recv(65536)
    length, kind, _, _, _ = netlink.NLMSG.unpack_from(data, 0)
    if kind == netlink.NLMSG_ERROR:
        raise NftError(f"reading the nf_tables generation failed: errno {netlink.error_code(data, 0)}")
    for attr, start, _end in _attributes(data, netlink.NLMSG.size + netlink.NFGEN.size, length):
        if attr == _NFTA_GEN_ID:
            return int(struct.unpack_from("!I", data, start)[0])
    raise NftError("the nf_tables generation reply carried no id")


_NFT_MSG_NEWRULE, _NFT_MSG_GETRULE = 6, 7
_NFPROTO = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
_NFTA_RULE_TABLE, _NFTA_RULE_EXPRESSIONS, _NFTA_RULE_USERDATA = 1, 4, 7
_NFTA_LIST_ELEM = 1
_NFTA_EXPR_NAME, _NFTA_EXPR_DATA = 1, 2
_NFTA_COUNTER_BYTES, _NFTA_COUNTER_PACKETS = 1, 2
_UDATA_RULE_COMMENT = 0
"""NFTNL_UDATA_RULE_COMMENT: how nft stores a rule's comment in the rule's user data."""
_BE64 = struct.Struct("!Q")


def rule_counters(family: str, table: str, timeout: float = 5.0) -> list[tuple[str, int, int]]:
    """(comment, packets, bytes) of every `counter` statement in the rules of one table of the
    calling thread's namespace ("" for a rule without a comment). A table that does not exist
    has none: the kernel answers a dump filtered by table with nothing, not an error.

    Read with one NFT_MSG_GETRULE dump, not through libnftables: a listing, even terse, makes
    libnftables fetch every set element first (7 MB and 13 ms at 5,000 peers, every time the
    agent reads its counters), while rules are all this needs."""
    body = netlink.NFGEN.pack(_NFPROTO[family], 0, 0) + netlink.nla(_NFTA_RULE_TABLE, table.encode() + b"\0")
    found: list[tuple[str, int, int]] = []
    with _asked(_NFT_MSG_GETRULE, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP, body, timeout) as sock:
        buf = bytearray(1 << 16)
        while True:
            try:
                n = sock.recv_into(buf)
            except TimeoutError as exc:
                raise NftError("reading rule counters: no answer from the kernel") from exc
            if _rule_messages(buf, n, table, found):
                return found


def _attributes(buf: bytearray | bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute in buf[pos:end]."""
    while pos + netlink.NLA.size <= end:
        size, attr = netlink.NLA.unpack_from(buf, pos)
        if size < netlink.NLA.size or pos + size > end:
            return
        yield attr & netlink.TYPE_MASK, pos + netlink.NLA.size, pos + size
        pos += (size + 3) & ~3


def _rule_messages(buf: bytearray, n: int, table: str, out: list[tuple[str, int, int]]) -> bool:
    """Append the counters of the rule messages in buf[:n]; True at the end of the dump."""
    off = 0
    rule_type = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWRULE
    while off + netlink.NLMSG.size <= n:
        length, kind, _, _, _ = netlink.NLMSG.unpack_from(buf, off)
        if length < netlink.NLMSG.size or off + length > n:
            raise NftError("reading rule counters: a truncated netlink message")
        if kind == netlink.NLMSG_DONE:
            return True
        if kind == netlink.NLMSG_ERROR:
            code = netlink.error_code(buf, off)
            if code:
                raise NftError(f"reading rule counters of {table}: {os.strerror(code)}")
        elif kind == rule_type:
            start = off + netlink.NLMSG.size + netlink.NFGEN.size
            out.extend(_rule_counts(buf, start, off + length, table))
        off += (length + 3) & ~3
    return False


def _rule_counts(buf: bytearray, pos: int, end: int, table: str) -> list[tuple[str, int, int]]:
    """The (comment, packets, bytes) of each counter expression of one rule message."""
    comment, counts, in_table = "", [], False
    for attr, start, stop in _attributes(buf, pos, end):
        if attr == _NFTA_RULE_TABLE:
            in_table = bytes(buf[start:stop]).rstrip(b"\0").decode(errors="replace") == table
        elif attr == _NFTA_RULE_EXPRESSIONS:
            elements = (span for span in _attributes(buf, start, stop) if span[0] == _NFTA_LIST_ELEM)
            counts = [c for _, a, b in elements for c in _counter(buf, a, b)]
        elif attr == _NFTA_RULE_USERDATA:
            comment = _comment(bytes(buf[start:stop]))
    return [(comment, packets, nbytes) for packets, nbytes in counts] if in_table else []


def _counter(buf: bytearray, pos: int, end: int) -> list[tuple[int, int]]:
    """[(packets, bytes)] when the expression at buf[pos:end] is a counter, else []."""
    name, data = b"", None
    for attr, start, stop in _attributes(buf, pos, end):
        if attr == _NFTA_EXPR_NAME:
            name = bytes(buf[start:stop]).rstrip(b"\0")
        elif attr == _NFTA_EXPR_DATA:
            data = (start, stop)
    if name != b"counter" or data is None:
        return []
    packets = nbytes = 0
    for attr, start, _stop in _attributes(buf, *data):
        if attr == _NFTA_COUNTER_PACKETS:
            packets = _BE64.unpack_from(buf, start)[0]
        elif attr == _NFTA_COUNTER_BYTES:
            nbytes = _BE64.unpack_from(buf, start)[0]
    return [(packets, nbytes)]


def _comment(udata: bytes) -> str:
    """The comment in a rule's user data (type-length-value items, one byte each for type and
    length; nft stores the comment with its terminating NUL)."""
    pos = 0
    while pos + 2 <= len(udata):
        kind, size = udata[pos], udata[pos + 1]
        if kind == _UDATA_RULE_COMMENT:
            return udata[pos + 2 : pos + 2 + size].rstrip(b"\0").decode(errors="replace")
        pos += 2 + size
    return ""
