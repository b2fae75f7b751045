"""Port index: the rules whose services cover a connection's protocol and destination port, as one mask.

Fed by the rule book (each rule's `PortMatcher`, the union of its services); feeds the evaluator,
which ANDs the mask into a flow's candidate rules, so that the lowest candidate left is the rule
that decides unless a process constraint or `pass` says otherwise. Asking `ports_match` of each
candidate in turn cost a Python call per candidate; here each protocol's port line is cut once into
intervals, each with the OR of the bits of the rules covering it, and a lookup is one `bisect`.

What it deliberately does not do: look at processes or users (the evaluator's service scan does).
It answers exactly what `rulebook.ports_match` answers for every rule: a rule without a matcher
(a service is `any`) covers every protocol and port; one whose protocol has no ranges covers every
port of that protocol, an unknown port (None) included; a range covers the numbered ports inside it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

from microseg.model import services

PortMatcher = dict[services.Protocol, tuple[tuple[int, int], ...]] | None
"""Per protocol the port ranges a rule covers (empty: every port); None: every protocol (rulebook's)."""


class _PortLine:
    """One protocol's ports as disjoint intervals: interval i is [starts[i], starts[i + 1]) and
    covered by `masks[i]`; below the first start and from the last one on, only `whole` covers."""

    def __init__(self, ranges: list[tuple[int, int, int]], whole: int) -> None:
        events: dict[int, list[tuple[int, int]]] = {}
        for first, last, bit in ranges:
            events.setdefault(first, []).append((bit, 1))
            events.setdefault(last + 1, []).append((bit, -1))
        self.whole = whole
        self.starts = sorted(events)
        self.masks: list[int] = []
        covering: Counter[int] = Counter()  # a rule's own ranges may overlap: count, then OR
        mask = 0
        for start in self.starts:
            for bit, step in events[start]:
                covering[bit] += step
                mask = mask | bit if covering[bit] else mask & ~bit
            self.masks.append(whole | mask)

    def mask(self, port: int) -> int:
        i = bisect.bisect_right(self.starts, port) - 1
        return self.masks[i] if i >= 0 else self.whole


class PortIndex:
    """(protocol, port) -> bits of the rules whose services cover it."""

    def __init__(self, matchers: Sequence[PortMatcher]) -> None:
        everywhere = 0
        whole: Counter[services.Protocol] = Counter()
        ranges: dict[services.Protocol, list[tuple[int, int, int]]] = {p: [] for p in services.Protocol}
        for index, matcher in enumerate(matchers):
            bit = 1 << index
            if matcher is None:
                everywhere |= bit
                continue
            for protocol, covered in matcher.items():
                if covered:
                    ranges[protocol].extend((first, last, bit) for first, last in covered)
                else:
                    whole[protocol] |= bit
        self._lines = {p: _PortLine(ranges[p], everywhere | whole[p]) for p in services.Protocol}

    def mask(self, protocol: services.Protocol, port: int | None) -> int:
        """Bits of the rules covering a connection with this protocol and destination port."""
        line = self._lines[protocol]
        return line.whole if port is None else line.mask(port)
