"""The tailing loop of one sink: read what follows its cursor, send it, move the cursor; one
retry point with capped, jittered exponential backoff; a lease so one replica streams per sink.

Fed by `store.streams` (cursor, lease, rows); feeds a `sinks.Sink`. Runs in its own thread (sinks
block on sockets and files) until `stop` is set. The cursor moves only after the sink took the
page, so a crash between the two sends the page again: delivery is at least once, and every item
carries a `uid` to dedupe on. A sink more than `bound` items behind in a source skips the oldest
and receives one `dropped` notice in their place, so a dead sink costs a bounded backlog, never
unbounded memory: the backlog is the database itself.

What it deliberately does not do: format items (the sink's renderer does) or parse settings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from microseg import errors
from microseg.server.streaming import items, sinks, specs
from microseg.store import database, streams

log = logging.getLogger("microseg.server.streaming")

POLL = 0.5
"""Seconds between looks at the sources when the sink has caught up."""
PAGE = 500
"""Most items sent in one go (one webhook POST, one TCP write, one fsync)."""
LEASE_TTL = 30.0
"""Seconds a lease lasts unless renewed; a crashed holder's sink waits this long for another replica."""
LEASE_RETRY = 5.0
"""Seconds between attempts of a replica that does not hold the lease."""
LAG_CHECK_EVERY = 5.0
"""Seconds between backlog checks of a source (each reads at most bound+1 ids)."""
SETTLE = 10.0
"""PostgreSQL: seconds a row behind an id gap waits for the gap's transaction to commit."""


class LeaseLostError(errors.TransientError):
    """Another replica holds the sink now (this one stalled past its lease)."""


class Streamer:
    """Streams the configured sources of one sink, in id order per source."""

    def __init__(
        self,
        spec: specs.SinkSpec,
        sink: sinks.Sink,
        db: database.Database,
        holder: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec, self.sink, self.db, self.holder, self.clock = spec, sink, db, holder, clock
        self.settle = None if db.is_sqlite else SETTLE  # SQLite commits ids in order
        self.lease_until = 0.0
        self.next_try = 0.0
        self.checked: dict[str, float] = {}
        self.refused = 0
        """Items a sink refused for good (a webhook's 4xx), skipped."""

    def run(self, stop: threading.Event) -> None:
        """Stream until `stop` is set; then give the lease up."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    busy = self.cycle()
                    failures = 0
                except Exception as exc:  # every failure comes here, to the one retry point
                    failures += 1
                    delay = backoff(failures, self.spec.backoff, self.spec.backoff_max)
                    transient = isinstance(exc, errors.TransientError)
                    log.warning(
                        "stream %s: %s; retrying in %.1fs", self.spec.name, exc, delay, exc_info=not transient
                    )
                    stop.wait(delay)
                    continue
                if not busy:
                    stop.wait(POLL)
        finally:
            self.stop()

    def stop(self) -> None:
        """Release the lease (another process may take over at once) and close the sink."""
        try:
            if self.lease_until:
                with self.db.write() as conn:
                    streams.release_lease(conn, self.spec.name, self.holder)
        except Exception:  # a stopping server must not fail on this; the lease expires anyway
            log.warning("stream %s: could not release its lease", self.spec.name, exc_info=True)
        finally:
            self.sink.close()

    def cycle(self) -> bool:
        """One page from each source; True when more may be waiting."""
        if not self.leased():
            return False
        busy = False
        for source in self.spec.what:
            busy = self.step(source) or busy
        return busy

    def leased(self) -> bool:
        """Whether this process streams the sink now (taking or renewing the lease as needed)."""
        now = self.clock()
        if self.lease_until - now > LEASE_TTL / 2:
            return True
        if not self.lease_until and now < self.next_try:
            return False
        with self.db.write() as conn:
            held = streams.take_lease(self.db, conn, self.spec.name, self.holder, now=now, ttl=LEASE_TTL)
        if held and not self.lease_until:
            self.checked.clear()  # look at the backlog again: another replica may have left one
            log.info("stream %s: streaming from this process", self.spec.name)
        self.lease_until = now + LEASE_TTL if held else 0.0
        self.next_try = now + LEASE_RETRY
        return held

    def step(self, source: str) -> bool:
        """Send what follows the cursor in `source` (or the drop notice); True when more waits."""
        where = self.cursor(source)
        if self.lag_check_due(source):
            with self.db.read() as conn:
                skip = streams.backlog(conn, source, where, self.spec.bound, self.verdicts(source))
            if skip is not None:
                self.catch_up(source, where, skip)
                return True
        settle_before = None if self.settle is None else self.clock() - self.settle
        with self.db.read() as conn:
            page = streams.read(
                conn, source, where, limit=PAGE, verdicts=self.verdicts(source), settle_before=settle_before
            )
        if page.position == where.position:
            return False
        if page.rows:
            self.deliver([items.of_row(source, row) for row in page.rows])
        self.commit(source, streams.Cursor(page.position, page.at))
        return page.full

    def catch_up(self, source: str, where: streams.Cursor, skip: streams.Skip) -> None:
        """Skip the oldest items of a source the sink fell too far behind in, and say so."""
        bound = self.spec.bound
        notice = items.dropped(
            self.spec.name,
            source,
            skipped=skip.skipped,
            first=skip.first,
            last=skip.position,
            bound=bound,
            at=self.clock(),
        )
        self.deliver([notice])
        self.commit(source, streams.Cursor(skip.position, where.at))
        log.warning(
            "stream %s: skipped %d %s items (more than %d behind)",
            self.spec.name,
            skip.skipped,
            source,
            bound,
        )

    def cursor(self, source: str) -> streams.Cursor:
        """The stored cursor; a new sink's starts at the oldest item or at the head (`start=now`)."""
        with self.db.read() as conn:
            stored = streams.cursor(conn, self.spec.name, source)
            fixed = None if stored is None else streams.rewound(conn, source, stored)
            if stored is None:
                fixed = streams.head(conn, source) if self.spec.start == "now" else streams.Cursor(0, 0.0)
            elif fixed is not None:
                log.warning("stream %s: %s ids restarted below the cursor", self.spec.name, source)
        if fixed is None:
            assert stored is not None
            return stored
        self.commit(source, fixed)  # stored at once, so "now" means the sink's first start
        return fixed

    def verdicts(self, source: str) -> frozenset[str] | None:
        return self.spec.verdicts if source == "flows" else None

    def lag_check_due(self, source: str) -> bool:
        now = self.clock()
        if now - self.checked.get(source, float("-inf")) < LAG_CHECK_EVERY:
            return False
        self.checked[source] = now
        return True

    def deliver(self, page: Sequence[items.Item]) -> None:
        """Hand the page to the sink; a page it refuses for good is logged and skipped."""
        try:
            self.sink.send(page)
        except errors.PermanentError as exc:
            self.refused += len(page)
            log.error(
                "stream %s: %d item(s) refused and skipped (%s to %s): %s",
                self.spec.name,
                len(page),
                page[0].uid,
                page[-1].uid,
                exc,
            )

    def commit(self, source: str, where: streams.Cursor) -> None:
        """Move the cursor, in one transaction with renewing the lease (so it is still ours)."""
        now = self.clock()
        with self.db.write() as conn:
            if not streams.renew_lease(conn, self.spec.name, self.holder, now, LEASE_TTL):
                self.lease_until = 0.0
                raise LeaseLostError(f"lost the lease of {self.spec.name}")
            streams.save(conn, self.spec.name, source, where, now)
        self.lease_until = now + LEASE_TTL


def backoff(failures: int, initial: float, cap: float) -> float:
    """Exponential from `initial`, capped at `cap`, with jitter so replicas and sinks spread out."""
    ceiling = min(cap, initial * 2 ** min(failures - 1, 30))
    return random.uniform(ceiling / 2, ceiling)
