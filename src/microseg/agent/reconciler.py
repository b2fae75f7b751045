"""The reconciler: desired state (the last provisioned document) against the kernel's actual state.

Fed by the feed loop (`desire`, on every new document) and the agent's timer (`tick`, every second);
feeds the data plane, and the agent's status and tamper reports. It runs the same three steps
whatever woke it: if the desired document or what the host knows about its processes changed,
apply; else if the kernel no longer holds what was applied, restore it and report what changed;
after a failed apply, retry with backoff. A document the data plane refuses is never half applied:
the kernel transaction fails whole and the previous rules stay in force (fail-static).

Every tick then lets the expiry cutter (when given one) look at the applied document's time
windows: the kernel stops new connections of an expired rule by itself, the cutter removes the
conntrack entries of the connections only that rule allowed. It also looks once more at the
outgoing document before a new one is applied, so a window that closed just then is not missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from microseg.agent import dataplane, expiry, knowledge
from microseg.model import ruleset

log = logging.getLogger("microseg.agent")


@dataclass(frozen=True)
class Tamper:
    """One restore after a change made outside microseg."""

    at: float
    drift: dataplane.Drift
    restored_in: float
    """Seconds from noticing the drift to the rules being back."""


@dataclass
class Status:
    """What the agent reports about enforcement."""

    applied_hash: str | None = None
    dataplane: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    applies: int = 0
    tampers: int = 0


class Reconciler:
    """Keeps one data plane equal to one desired document."""

    def __init__(
        self,
        plane: dataplane.Dataplane,
        *,
        learn: Callable[[ruleset.RulesetDocument | None], knowledge.Knowledge] = knowledge.learn,
        on_tamper: Callable[[Tamper], None] = lambda t: None,
        on_applied: Callable[[ruleset.RulesetDocument | None], None] = lambda d: None,
        cutter: expiry.ExpiryCutter | None = None,
        on_expired: Callable[[expiry.Expiry], None] = lambda e: None,
        relearn_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self.learn = learn
        self.on_tamper = on_tamper
        self.on_applied = on_applied
        self.cutter = cutter
        self.on_expired = on_expired
        self.relearn_every = relearn_every
        self.clock = clock
        self.status = Status(dataplane=plane.name)
        self._lock = threading.Lock()
        self._desired: ruleset.RulesetDocument | None = None
        self._applied: tuple[str | None, knowledge.Knowledge] | None = None
        self._learned_at = -1e18
        self._known = knowledge.Knowledge({}, {})
        self._retry_at = 0.0
        self._backoff = 0.5
        self._cut_error = ""

    @property
    def desired(self) -> ruleset.RulesetDocument | None:
        return self._desired

    def desire(self, doc: ruleset.RulesetDocument | None) -> None:
        """Make `doc` the desired state and reconcile at once."""
        with self._lock:
            self._desired = doc
            self._retry_at = 0.0
            self._learned_at = -1e18
        self.tick()

    def counters(self) -> dataplane.Counters:
        """The data plane's per-rule totals, read under the lock so never half way through an apply
        (which carries the old table's counts over)."""
        with self._lock:
            return self.plane.counters()

    def tick(self) -> None:
        """One reconciliation step (never raises: errors go into the status)."""
        with self._lock:
            try:
                self._step()
            except Exception as exc:  # any failure is reported and retried; enforcement stays as it was
                self._failed(exc)
            self._cut_expired()

    def _step(self) -> None:
        now = self.clock()
        doc = self._desired
        if now - self._learned_at >= self.relearn_every:
            self._known = self.learn(doc)
            self._learned_at = now
        wanted = (doc.hash if doc else None, self._known)
        if wanted != self._applied:
            if now < self._retry_at:
                return
            self._apply(doc, wanted)
            return
        drift = self.plane.check()
        if drift is None:
            return
        started = self.clock()
        self.plane.restore()
        tamper = Tamper(time.time(), drift, self.clock() - started)
        self.status.tampers += 1
        log.warning("rules changed outside microseg (%s); restored", drift.summary)
        self.on_tamper(tamper)

    def _apply(
        self, doc: ruleset.RulesetDocument | None, wanted: tuple[str | None, knowledge.Knowledge]
    ) -> None:
        self._cut_expired()  # judged by the document that admitted those connections, before it goes
        warnings = self.plane.apply(doc, self._known.cgroups, self._known.uids)
        if self.cutter is not None:
            self.cutter.follow(doc)
        self._applied = wanted
        self._backoff = 0.5
        self.status.applied_hash = doc.hash if doc else None
        self.status.errors = []
        self.status.warnings = warnings
        self.status.applies += 1
        log.info("applied %s (%d warnings)", doc.hash if doc else "the observing table", len(warnings))
        self.on_applied(doc)

    def _cut_expired(self) -> None:
        """Let the cutter handle closed windows. Its failures leave enforcement alone: the windows
        stay unhandled and the next tick tries again (logged once per distinct error)."""
        if self.cutter is None:
            return
        try:
            done = self.cutter.check()
        except Exception as exc:  # a conntrack failure must not stop reconciling
            message = f"{type(exc).__name__}: {exc}"
            if message != self._cut_error:
                log.error("cutting the connections of expired rules failed: %s", message)
            self._cut_error = message
            return
        self._cut_error = ""
        for item in done:
            self.on_expired(item)

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message not in self.status.errors:
            log.error("reconcile failed: %s", message)
        self.status.errors = [message]
        self._retry_at = self.clock() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)
