"""The process's view of the database: the compiled engine, change notification, metrics.

Fed by the state row (active version, inventory generation); feeds the ruleset feed, agent
status and explanations. `engine()` rebuilds the PolicyEngine whenever the row differs from what
the cached one was built from, so every replica serves what the database says. A watcher task
reads the row every `watch_interval` (and at once after a local write) and wakes long-polls.

What it deliberately does not do: hold anything that is not in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from microseg.engine import engine as engines
from microseg.errors import LookupFailedError, MicrosegError
from microseg.model import estate, ruleset
from microseg.model.workloads import Workload
from microseg.server import compose, config, documents, flowwatch, kinds, ratelimit
from microseg.store import database, objects, state, versions

if TYPE_CHECKING:  # the feed drives a runtime; only its type is needed here
    from microseg.server import feed

log = logging.getLogger("microseg.server")


@dataclass
class Metrics:
    """Counters of this process (Prometheus sums them over replicas)."""

    flow_records: int = 0
    flow_batches: int = 0
    compiles: int = 0
    compile_seconds: float = 0.0
    last_compile_seconds: float = 0.0
    feed_waiting: int = 0
    """Ruleset long-polls parked in this process right now."""
    ingest_times: list[tuple[float, int]] = field(default_factory=list)

    def ingested(self, records: int) -> None:
        """Count a stored batch (and keep a minute of history for the rate)."""
        now = time.time()
        self.flow_records += records
        self.flow_batches += 1
        self.ingest_times.append((now, records))
        while self.ingest_times and self.ingest_times[0][0] < now - 60:
            self.ingest_times.pop(0)

    def ingest_rate(self) -> float:
        """Flow records per second over the last minute."""
        now = time.time()
        return sum(n for t, n in self.ingest_times if t >= now - 60) / 60.0


@dataclass(frozen=True)
class Compiled:
    """An engine built for one (version, inventory generation)."""

    key: tuple[int, int]
    engine: engines.PolicyEngine | None
    """None before the first provision: agents get nothing until then."""
    basis: tuple[int, tuple[str, ...]] = (0, ())
    """The policy it was built from (`policy_key`)."""
    estate: estate.Estate | None = None
    """What it was built from, whole (an engine updated in place keeps its first estate)."""

    @functools.cached_property
    def workloads(self) -> Mapping[str, Workload]:
        """The workloads it holds, by name, as the engine has them (modes after mode scopes)."""
        return {} if self.estate is None else {w.name: w for w in self.estate.workloads}


def policy_key(version: int, label_rules: list[objects.Stored]) -> tuple[int, tuple[str, ...]]:
    """What a parsed policy depends on: the version and the label rules' contents."""
    return version, tuple(sorted(o.etag for o in label_rules))


UNREAD = (-1, -1)
"""The key of a state row not read yet (nothing compiled, nothing watched)."""


class Runtime:
    """Shared by every request of one server process."""

    def __init__(self, settings: config.ServerSettings, db: database.Database) -> None:
        self.settings = settings
        self.db = db
        self.workloads = compose.WorkloadCache()
        self.metrics = Metrics()
        self.control_plane: tuple[estate.Endpoint, ...] = tuple(
            compose.endpoint(e) for e in settings.own_endpoints()
        )
        self.enroll_limit = ratelimit.RateLimit(settings.enroll_per_minute)
        self.flow_limit = ratelimit.RateLimit(settings.flow_uploads_per_minute)
        self.report_limit = ratelimit.RateLimit(settings.agent_reports_per_minute)
        """Flow batches per agent id (per process)."""
        self.invariant_watch = flowwatch.Watch()
        """Invariant violations reported lately by this replica."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.encoder = documents.DocumentEncoder()
        self.feed: feed.Feed | None = None
        """The ruleset feed, set by the app factory."""
        self._lock = threading.Lock()
        self._building = threading.Lock()
        """Held by the one thread building the next engine."""
        self._policy_lock = threading.Lock()
        self._policies: dict[tuple[int, tuple[str, ...]], estate.Estate] = {}
        self._compiled = Compiled(UNREAD, None)
        self._poke: asyncio.Event | None = None
        self._seen: tuple[int, int] = UNREAD
        self._hashes: dict[str, str] = {}
        self._hashes_key: tuple[int, int] = UNREAD
        self._snapshot_lock = threading.Lock()
        self._snapshot: tuple[tuple[int, int], engines.PolicyEngine | None] = (UNREAD, None)

    # -- the compiled engine ---------------------------------------------------------------

    def compiled(self, *, refresh: bool = True, latest: bool = True) -> Compiled:
        """The engine for what the database says now (rebuilt when the state row moved);
        `refresh=False`: the last one built, without reading the state row; `latest=False`: the
        last one built while another thread builds the next (a status read does not wait the
        seconds a compile of 10,000 workloads takes: it says what agents hold until then)."""
        if not refresh:
            return self._compiled
        with self.db.read() as conn:
            key = state.read(conn)
        if self._compiled.key == key or (not latest and self._building.locked()):
            return self._compiled
        with self._building:
            if self._compiled.key != key:
                self._build(key)
            return self._compiled

    def snapshot(self) -> engines.PolicyEngine | None:
        """An engine of what the database says now that nothing changes in place (None before the
        first provision), for reads that take seconds: the analyses and rollout readiness.

        They must not hold the engine lock that long (the feed could not answer agents, nor a
        quarantine reach its workload, until they end), and the engine in use is updated in place
        under that lock. This one is built on first use after the state moved, from the same
        estate, and shared by the analyses until it moves again (its verdict caches stay warm, as
        the engine in use's do). Its only callers evaluate and look workloads up: two of them at
        once fill its caches twice at worst, each fill one dictionary operation."""
        compiled = self.compiled()
        with self._snapshot_lock:
            if self._snapshot[0] != compiled.key:
                built = None if compiled.estate is None else engines.PolicyEngine(compiled.estate)
                self._snapshot = (compiled.key, built)
            return self._snapshot[1]

    def _build(self, key: tuple[int, int]) -> None:
        """The engine for `key`, with the hash of every managed workload's document, swapped in
        whole under the engine lock. A full compile runs without that lock: the feed and the
        API keep using the last engine meanwhile."""
        started = time.perf_counter()
        with self.db.read() as conn:
            key = state.read(conn)
            live = objects.of_kinds(conn, kinds.LIVE)
            rules = [o for o in live if o.kind == "LabelRule"]
            policy = self._policies.get(policy_key(key[0], rules))
            version = versions.get(conn, key[0]) if key[0] and policy is None else None
        if key[0] == 0:
            with self._lock:
                self._compiled = Compiled(key, None)
            return
        if policy is None:
            assert version is not None  # the state row only ever names a stored version
            policy = compose.load_policy([*version.documents, *(o.doc for o in rules)])
            self.remember_policy(policy_key(key[0], rules), policy)
        etags = {o.name: o.etag for o in live if o.kind == "Workload"}
        est = compose.compose(
            policy, [o.doc for o in live], self.workloads, self.control_plane, version=key[0], etags=etags
        )
        basis = policy_key(key[0], rules)
        with self._lock:  # the incremental path changes the engine in use
            changes = self._changes(basis, est)
            if changes is not None:
                self._swap(Compiled(key, self._updated(changes, est), basis, est), started)
                return
        built = Compiled(key, engines.PolicyEngine(est), basis, est)
        hashes = _document_hashes(built)  # nobody else sees this engine yet
        with self._lock:
            self._swap(built, started, hashes)

    def _swap(self, built: Compiled, started: float, hashes: dict[str, str] | None = None) -> None:
        """Make `built` the engine in use (the caller holds the engine lock)."""
        self._compiled = built
        self._hashes, self._hashes_key = (_document_hashes(built) if hashes is None else hashes), built.key
        took = time.perf_counter() - started
        self.metrics.compiles += 1
        self.metrics.compile_seconds += took
        self.metrics.last_compile_seconds = took

    def _changes(
        self, basis: tuple[int, tuple[str, ...]], est: estate.Estate
    ) -> tuple[list[str], list[Workload]] | None:
        """The workloads gone and changed since the last engine, when the engine's incremental
        path can bring it up to `est` (a relabel recomputes one identity, a re-address moves set
        members); None when a full compile is due: other policy, or many changes."""
        prev = self._compiled
        if (
            prev.engine is None
            or prev.basis != basis
            or prev.engine.estate.control_plane != est.control_plane
        ):
            return None
        new = {w.name: w for w in est.workloads}
        gone = [n for n in prev.workloads if n not in new]
        changed = [w for n, w in new.items() if prev.workloads.get(n) != w]
        if len(gone) + len(changed) > max(8, len(new) // 4):
            return None
        return gone, changed

    def _updated(self, changes: tuple[list[str], list[Workload]], est: estate.Estate) -> engines.PolicyEngine:
        """The last engine with `changes` applied (the caller holds the engine lock). When the
        incremental path refuses a change half-way (an address moving between two workloads in one
        step), the half-updated engine must never be read: the fresh one is compiled before the
        lock is let go."""
        engine = self._compiled.engine
        assert engine is not None  # `_changes` said so
        gone, changed = changes
        try:
            for name in gone:
                engine.remove_workload(name)
            for w in changed:
                engine.upsert_workload(w)
        except MicrosegError:
            return engines.PolicyEngine(est)
        return engine

    def remember_policy(self, key: tuple[int, tuple[str, ...]], policy: estate.Estate) -> None:
        """Keep a parsed version (versions never change, so it is valid until its label rules do)."""
        with self._policy_lock:
            if len(self._policies) >= 4:
                self._policies.pop(next(iter(self._policies)))
            self._policies[key] = policy

    @property
    def watched_key(self) -> tuple[int, int]:
        """The state row as the watcher last read it (`UNREAD` until it has; it reads every
        `watch_interval`, and at once after a local write)."""
        return self._seen

    @property
    def engine_lock(self) -> threading.Lock:
        """Held while using a compiled engine: its caches are not meant for two threads at once."""
        return self._lock

    def over_live(self, policy: estate.Estate, live: list[objects.Stored], version: int) -> estate.Estate:
        """An already parsed policy (with `live`'s label rules) over the live inventory `live`."""
        etags = {o.name: o.etag for o in live if o.kind == "Workload"}
        docs = [o.doc for o in live]
        return compose.compose(policy, docs, self.workloads, self.control_plane, version=version, etags=etags)

    def estate(
        self, documents: list[dict[str, Any]], live: list[objects.Stored], version: int
    ) -> estate.Estate:
        """The estate of policy `documents` over the live inventory `live`."""
        policy = compose.load_policy([*documents, *(o.doc for o in live if o.kind == "LabelRule")])
        return self.over_live(policy, live, version)

    def document_locked(self, compiled: Compiled, workload: str) -> ruleset.RulesetDocument | None:
        """The provisioned ruleset of a managed workload from `compiled` (None: nothing
        provisioned, or no such managed workload), for a caller holding `engine_lock` (the feed
        holds it once for a chunk of documents); its hash is remembered for `expected_hashes`."""
        if compiled.engine is None:
            return None
        try:
            doc = compiled.engine.document(workload)
        except LookupFailedError:
            return None
        if self._hashes_key == compiled.key:  # not for an engine replaced since the caller took it
            self._hashes[workload] = doc.hash
        return doc

    def expected_hash(self, workload: str, *, latest: bool = True) -> str | None:
        """The hash of the document `workload`'s agent should hold now (see `expected_hashes`)."""
        return self.expected_hashes([workload], latest=latest)[workload]

    def expected_hashes(self, workloads: list[str], *, latest: bool = True) -> dict[str, str | None]:
        """The hash of the document each workload's agent should hold now: every managed
        workload's is computed with its engine (`_build`), so that /metrics and listings ask for
        thousands of them during a fan-out without building documents against the feed's worker;
        the rest (a workload managed since) under one hold of the engine lock."""
        compiled = self.compiled(latest=latest)
        memo = self._hashes if self._hashes_key == compiled.key else {}
        out: dict[str, str | None] = {w: memo.get(w) for w in workloads}
        missing = [w for w, h in out.items() if h is None]
        if missing and compiled.engine is not None:
            with self._lock:
                for w in missing:
                    doc = self.document_locked(compiled, w)
                    out[w] = doc.hash if doc is not None else None
        return out

    # -- change notification ---------------------------------------------------------------

    def poke(self) -> None:
        """A local write happened: look at the state row now (thread-safe)."""
        loop, poke = self._loop, self._poke
        if loop is not None and poke is not None:
            loop.call_soon_threadsafe(poke.set)

    async def watch(self) -> None:
        """Wake long-polls whenever the state row changes, whoever changed it."""
        self._loop = asyncio.get_running_loop()
        self._poke = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.settings.watch_interval)
            self._poke.clear()
            try:
                key = await asyncio.to_thread(self._read_key)
            except Exception:  # the database may be restarting; keep watching, but say so
                log.warning("cannot read the state row; retrying", exc_info=True)
                await asyncio.sleep(self.settings.watch_interval)
                continue
            if key != self._seen:
                self._seen = key
                if self.feed is not None:
                    self.feed.changed()

    def _read_key(self) -> tuple[int, int]:
        with self.db.read() as conn:
            return state.read(conn)


def _document_hashes(built: Compiled) -> dict[str, str]:
    """The hash of every managed workload's document: all of them are asked for at once after a
    provision (every parked agent, /metrics), and the engine keeps the documents."""
    assert built.engine is not None
    found: dict[str, str] = {}
    for name, workload in built.workloads.items():
        if workload.managed:
            with contextlib.suppress(MicrosegError):  # asked for again, the error is reported there
                found[name] = built.engine.document(name).hash
    return found
