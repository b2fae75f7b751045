"""Giving freed C heap back to the kernel after the agent's large, short-lived allocations.

glibc keeps memory that `free` returned in its arenas (one per thread that allocated) for reuse,
so a process's resident size stays near the high-water mark of its largest transient structure,
such as libnftables' ruleset cache (every set element of a 5,000-peer table: 7 MB, freed with its
context after each `nft.Nft.run`). `trim` hands the free pages back (`malloc_trim`); it took 3 us
here, so it is done after each such operation rather than on a timer.

Elsewhere than glibc (musl, no `malloc_trim`) it does nothing: those allocators differ anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]  # type: ignore[attr-defined]
    trim.restype = ctypes.c_int  # type: ignore[attr-defined]
    return trim


_malloc_trim = _find_trim()


def trim() -> bool:
    """Give the free pages of every malloc arena back to the kernel; whether anything was given."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False


def available() -> bool:
    """Whether this C library can trim (glibc)."""
    return _malloc_trim is not None
