"""Invariants against incoming flows: an event when a connection that got through breaks one.

Fed by flow ingestion with each batch before it is written; feeds the events table. A connection
"got through" when its verdict is allowed or would-block (alert mode lets it pass); blocked ones
prove the invariant rather than break it. Checked against the active version's invariants.

A violation is reported once per (invariant, source, destination, port) per hour on each replica:
long connections are re-reported by agents every minute, and one event says enough. A second
replica may report the same violation once more, which errs on the side of telling.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from microseg import errors
from microseg.engine import invariants
from microseg.engine.engine import PolicyEngine
from microseg.model import services
from microseg.server import models

QUIET_SECONDS = 3600.0
"""How long one violation stays reported before it is reported again."""
MAX_REMEMBERED = 100_000


class Watch:
    """What was reported lately, per replica."""

    def __init__(self) -> None:
        self._reported: dict[tuple[str, str, str, str], float] = {}
        self._lock = threading.Lock()

    def events(
        self, eng: PolicyEngine, lock: threading.Lock, workload: str, records: list[models.FlowRecord]
    ) -> list[dict[str, Any]]:
        """One event per invariant of `eng`'s estate broken by the batch's connections (new ones
        only); `lock` guards the engine's caches."""
        if not eng.estate.invariants:  # the usual case: the ingest hot path pays nothing more
            return []
        passed = [r for r in records if r["verdict"] != "blocked" and r["proto"] != "other"]
        if not passed:
            return []
        with lock:
            found = _violations(invariants.Guard(eng), passed)
        fresh = self._fresh(found)
        return [_event(workload, name, hits) for name, hits in fresh.items()]

    def _fresh(self, found: list[Hit]) -> dict[str, list[dict[str, Any]]]:
        now = time.monotonic()
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            if len(self._reported) > MAX_REMEMBERED:
                self._reported = {k: t for k, t in self._reported.items() if now - t < QUIET_SECONDS}
            for name, hit in found:
                key = (name, hit["src"], hit["dst"], f"{hit.get('dport')}/{hit['proto']}")
                if now - self._reported.get(key, -QUIET_SECONDS) < QUIET_SECONDS:
                    continue
                self._reported[key] = now
                out.setdefault(name, []).append(hit)
        return out


Hit = tuple[str, dict[str, Any]]
"""(invariant name, the flow record that breaks it)."""


def _violations(guard: invariants.Guard, records: list[models.FlowRecord]) -> list[Hit]:
    """The records that break an invariant; one question per distinct connection, since a batch
    repeats them."""
    out: list[Hit] = []
    answers: dict[tuple[str, str, int | None, str], list[str]] = {}
    for r in records:
        full: dict[str, Any] = {**models.FLOW_DEFAULTS, **r}
        key = (full["src"], full["dst"], full["dport"], full["proto"])
        names = answers.get(key)
        if names is None:
            names = answers[key] = _broken(guard, *key)
        out.extend((name, full) for name in names)
    return out


def _broken(guard: invariants.Guard, src: str, dst: str, port: int | None, proto: str) -> list[str]:
    try:
        ends = guard.eng.endpoint(src), guard.eng.endpoint(dst)
    except errors.LookupFailedError:
        return []  # not an address (the model only bounds its length); nothing to say about it
    return [i.name for i in guard.broken_by_flow(*ends, port, services.Protocol(proto))]


def _event(workload: str, name: str, hits: list[dict[str, Any]]) -> dict[str, Any]:
    first = hits[0]
    where = f"{first['src']} -> {first['dst']} {first['dport']}/{first['proto']} ({first['verdict']})"
    return {
        "kind": "invariant-violation",
        "workload": workload,
        "message": f"{workload}: invariant {name} broken by {len(hits)} observed flow(s), e.g. {where}",
        "details": {"invariant": name, "count": len(hits), "examples": hits[:5]},
    }
