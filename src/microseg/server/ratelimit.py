"""Sliding-window rate limits per key, per process: enrollment per client address, flow uploads
per agent.

Per process on purpose: it slows down guessing of enrollment tokens and an agent flooding the
flow store without a shared store; behind a load balancer each replica counts its own, so a
deployment of N replicas lets a key through up to N times the limit. Tokens carry 256 random bits,
so the enrollment limit is about noise and load, not secrecy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimit:
    """At most `count` events per `window` seconds per key."""

    def __init__(self, count: int, window: float = 60.0) -> None:
        self.count, self.window = count, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record an attempt; whether it is within the limit."""
        return self.wait(key) == 0

    def wait(self, key: str) -> int:
        """Record an attempt within the limit and answer 0, or answer the whole seconds until one
        would be (what `Retry-After` says; a refused attempt is not recorded)."""
        now = time.monotonic()
        with self._lock:
            times = self._seen.setdefault(key, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.count:
                oldest = times[0] if times else now  # a limit of 0 lets nothing through
                return max(1, math.ceil(oldest + self.window - now))
            times.append(now)
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v}
            return 0
