"""Python's cyclic garbage collector paused while an analysis builds its objects.

An analysis over a window builds hundreds of thousands of small objects (rows, records, flows,
verdict keys) that all live until it answers. CPython runs a full collection each time the objects
that survived younger collections grow by a quarter of the older ones, so a bulk build pays for
walking everything alive, the engines included, again and again. In one ad-hoc run on
bench/bench_analytics.py's inputs (1,000,000 stored rows, 100,000 distinct flows, SQLite; a
development measurement, not a bench/ figure: those are in BENCHMARKS.md), the flow set took 3.8 s
with the collector running and 1.8 s paused, the dependency map 10.0 s and 5.4 s.

The analyses make no reference cycles that matter: their objects are freed by reference counting.
Cycles that other threads make meanwhile wait until the last running analysis ends, and the
collector runs as usual after that. A caller that turned the collector off keeps it off.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class _Pause:
    """How many analyses are running, and whether the collector ran before the first began."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.was_enabled = False


_PAUSE = _Pause()


@contextmanager
def paused() -> Iterator[None]:
    """The collector off while the block runs (and while any other `paused` block runs)."""
    with _PAUSE.lock:
        if _PAUSE.running == 0:
            _PAUSE.was_enabled = gc.isenabled()
            gc.disable()
        _PAUSE.running += 1
    try:
        yield
    finally:
        with _PAUSE.lock:
            _PAUSE.running -= 1
            if _PAUSE.running == 0 and _PAUSE.was_enabled:
                gc.enable()


def while_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` run inside `paused`."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused():
            return fn(*args, **kwargs)

    return run
