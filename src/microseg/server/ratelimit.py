"""A sliding-window rate limit per client address (enrollment), per process.

Per process on purpose: it slows down guessing of enrollment tokens without a shared store;
tokens carry 256 random bits, so the limit is about noise and load, not secrecy.
"""

from __future__ import annotations

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
        now = time.monotonic()
        with self._lock:
            times = self._seen.setdefault(key, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.count:
                return False
            times.append(now)
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v}
            return True
