"""Python's cyclic garbage collector, set for a server process that holds a large live heap, and
what its full collections cost (for /metrics).

With ten thousand agents parked, the process holds about a million objects the collector tracks:
each parked poll's coroutines, transport and parser, the engine and its documents. A full
collection walks all of them with the interpreter lock held, so every request and the feed stop
meanwhile. CPython's defaults (700, 10, 10) consider one every ten middle collections and run it
once the objects that survived the younger ones have grown by a quarter. A provision answers and
parks every poll again, which is that growth. In one run of bench/bench_fleet.py (10,000 agents,
SQLite; a development measurement, the bench/ figures are in BENCHMARKS.md) the server ran a full
collection about every two seconds while agents connected and during the fan-out, each 0.6-1.1 s:
the API's p99 was 1.0 s and the last agent had its ruleset after 5.4 s. Considered every thousand
middle collections, none ran in the fan-out: 0.57 s and 3.8 s.

The quarter rule still holds, so a heap that stops growing is still collected in full; cycles
that live long enough to reach the oldest generation wait longer for it. Young cycles, the most
common garbage, are collected as before.

`tune` also freezes what exists once the app is built (modules, routes, models), so no full
collection walks it again. Only the serving process calls it: tests build many apps in one
process, and freezing their leftovers would keep them for good.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from typing import Any

FULL_EVERY = 1000
"""Middle collections between two chances of a full one (CPython's default: 10)."""


@dataclass
class Pauses:
    """Full collections seen since `watch`, and the seconds they held the interpreter."""

    count: int = 0
    seconds: float = 0.0
    longest: float = 0.0


PAUSES = Pauses()
_started: list[float] = []
_watching = threading.Lock()


def _on_collect(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        took = time.perf_counter() - _started.pop()
        PAUSES.count += 1
        PAUSES.seconds += took
        PAUSES.longest = max(PAUSES.longest, took)


def watch() -> None:
    """Count full collections and their pauses from now on (once per process; callbacks run with
    the interpreter lock held, so the counts need no lock of their own)."""
    with _watching:
        if _on_collect not in gc.callbacks:
            gc.callbacks.append(_on_collect)


def tune() -> None:
    """Set the serving process's collector: full collections considered every `FULL_EVERY`
    middle ones, what is alive now collected once and frozen, pauses watched."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
    gc.collect()
    gc.freeze()
    watch()


def frozen() -> int:
    """Objects no collection walks (frozen by `tune`)."""
    return gc.get_freeze_count()
