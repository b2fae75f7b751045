"""Time slices: the instants where a rule's window opens or closes cut time into slices, and inside
one slice every rule is either active throughout or inactive throughout.

Fed by the rule book (its rules, in book order, with their notBefore/notAfter); feeds the evaluator,
which ANDs a slice's `active` mask into a flow's candidate rules and caches verdicts per slice key
instead of per moment. A rule is active in [notBefore, notAfter) (`Rule.active_at_instant`); the
edges are every notBefore and notAfter, as instants, sorted. Slice i holds the instants t with
exactly i edges at or before t, i.e. [edges[i - 1], edges[i]). No edge lies inside a slice, so no
window opens or closes inside it, and a verdict, which depends on the time only through which rules
are active, is the same at every moment of a slice.

What it deliberately does not do: read the clock for a book without windows (the one slice is the
answer), or hand out one key per slice: slices with the same active rules (before the first window
opens and after the last one closes, typically) share a key and so share cached verdicts.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from microseg.model import rules

ALWAYS = -1
"""The slice key of verdicts no windowed rule can decide: the same at every moment."""


class Slice(NamedTuple):
    """The rules active during one slice of time."""

    key: int
    """Equal for slices with equal `active` (a verdict cache key part)."""
    active: int
    """Bits of the rules active in the slice (every rule without a window, always)."""


class TimeSlices:
    """Moment -> the slice holding it, for one rule book. Each slice's mask is worked out the first
    time a moment falls into it (a book may hold many windows; a replay meets few slices)."""

    def __init__(self, book_rules: Sequence[rules.Rule]) -> None:
        self._timed = tuple((1 << i, r) for i, r in enumerate(book_rules) if _window(r))
        self.timed: int = sum(bit for bit, _ in self._timed)
        """Bits of the rules with a window: only these make a verdict depend on the time."""
        # a rule without a window is always active (the book holds enabled rules only)
        self._untimed = sum(1 << i for i, r in enumerate(book_rules) if not _window(r))
        self.edges: tuple[int, ...] = tuple(
            sorted({rules.instant(m) for _, r in self._timed for m in _window(r)})
        )
        self._slices: list[Slice | None] = [None] * (len(self.edges) + 1)
        self._by_active: dict[int, Slice] = {}

    def at(self, moment: datetime | None) -> Slice:
        """The slice holding `moment` (None: now)."""
        if not self.edges:
            return self._slice(0)
        at = time.time_ns() // 1000 if moment is None else rules.instant(moment)
        index = bisect.bisect_right(self.edges, at)
        return self._slices[index] or self._slice(index)

    def _slice(self, index: int) -> Slice:
        found = self._slices[index]
        if found is None:
            # an instant inside slice `index`: its first edge, or just before the first edge
            inside = self.edges[index - 1] if index else (self.edges[0] - 1 if self.edges else 0)
            active = self._untimed
            for bit, rule in self._timed:
                if rule.active_at_instant(inside):
                    active |= bit
            found = self._slices[index] = self._by_active.setdefault(
                active, Slice(len(self._by_active), active)
            )
        return found


def _window(rule: rules.Rule) -> tuple[datetime, ...]:
    return tuple(m for m in (rule.not_before, rule.not_after) if m is not None)
