"""The agent daemon: one process per host (or per network namespace in the lab) that keeps the
provisioned policy enforced and reports what it sees.

Fed by the server (enrollment, the ruleset long-poll) and the kernel (conntrack events, NFLOG
packets, /proc); feeds the reconciler, the spool and the server. Threads, each with one job:

    main      reconciler tick every `interval` seconds: apply, verify, restore after tampering
    feed      enroll once, then long-poll the ruleset; a new document is saved and desired
    observe   conntrack + NFLOG -> flow table -> a spooled batch every `upload_every` seconds
    upload    spooled batches to the server, oldest first, kept until the server has them (uploader)
    report    status on every change (applied hash, errors, warnings, tamper incidents, rule
              counters read every `counters_every`, expired rules and the connections cut for
              them) and heartbeats with the inventory at start, on change and every
              `heartbeat_every`

Rule counters go up as monotonic totals per epoch (a random id of this data plane's lifetime,
new at every agent start), never as deltas: a report the server received but whose answer was
lost is simply sent again, and the server counts only what grew since the last report of the
same epoch. A new epoch starts from zero, so nothing is counted twice across agent restarts.

State directory: `agent.json` (server, agent id, credential: mode 0600), `ruleset.json` (the last
document applied) and `spool/`. At start the saved document is applied before the server is asked
anything, so a restarted agent enforces at once; with the server gone it keeps enforcing what it
has (fail-static) and spools flows within the spool's bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microseg import errors
from microseg import settings as config
from microseg.agent import client as api
from microseg.agent import (
    conntrack,
    dataplane,
    expiry,
    flowtable,
    inventory,
    netns,
    nflog,
    procfs,
    reconciler,
    spool,
    uploader,
)
from microseg.model import addresses, ruleset, services
from microseg.render import semantics

log = logging.getLogger("microseg.agent")


@dataclass(frozen=True)
class AgentSettings:
    """How one agent runs."""

    server: str
    """Base URL of the control plane, e.g. http://10.77.0.1:8440."""
    state_dir: Path
    """Credential, last applied document and flow spool."""
    enroll_token: str | None = None
    """Needed only until the agent has a credential."""
    netns: str | None = None
    """Network namespace to run in (name under /run/netns or a path); None: the agent's own."""
    hostname: str | None = None
    """Reported hostname (the workload's name); default: the system's."""
    kind: str = "vm"
    """Workload kind reported: host, vm, container or pod."""
    dataplane: str = "auto"
    """auto (nftables, else iptables), nftables or iptables."""
    interval: float = 1.0
    """Seconds between tamper checks."""
    upload_every: float = 2.0
    """Seconds between flow batches."""
    heartbeat_every: float = 30.0
    """Seconds between heartbeats when nothing changes."""
    long_poll: float = 30.0
    """Seconds one ruleset long-poll may wait."""
    observe_batch: float = 0.01
    """Seconds to let conntrack and NFLOG events gather after a wake-up before reading them."""
    dump_every: float = 60.0
    """Seconds between conntrack dumps (byte counts of long-lived flows)."""
    counters_every: float = 10.0
    """Seconds between readings of the rule counters for the status report (a change is a report)."""
    tamper_visible: float = 120.0
    """Seconds the status keeps saying `tampered` after a restore, so people notice."""
    spool_bytes: int = 64 << 20
    """Bound of the on-disk flow spool."""
    tls_verify: bool | str = True
    """Verify the server's certificate (or a CA bundle path)."""
    render: config.RenderSettings = field(default_factory=config.RenderSettings)
    """Table name, NFLOG group and friends."""


class Agent:
    """Everything one agent does; `run` blocks until `stop`."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.report_now = threading.Event()
        self.dir = settings.state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.identity = _read_json(self.dir / "agent.json")
        credential = (
            self.identity.get("credential") if self.identity.get("server") == settings.server else None
        )
        self.client = api.Client(settings.server, credential, verify=settings.tls_verify)
        self.spool = spool.Spool(self.dir / "spool", settings.spool_bytes)
        self._lock = threading.Lock()
        self._tamper: list[dict[str, Any]] = []
        self._expired: list[dict[str, Any]] = []
        self._last_tamper = 0.0
        self._reported: dict[str, Any] | None = None
        self.plane: dataplane.Dataplane | None = None
        self.reconciler: reconciler.Reconciler | None = None
        self.flows: flowtable.FlowTable | None = None
        self._addresses: list[str] = []
        self._observing_warnings: list[str] = []
        self._counters: dict[str, Any] | None = None

    # -- start and stop -------------------------------------------------------------------------

    def run(self) -> None:
        """Enter the namespace, resume enforcement, start the threads, reconcile until stopped."""
        if self.settings.netns:
            netns.enter(self.settings.netns)  # before any thread or socket: they inherit it
        render = dataclasses.replace(self.settings.render, cgroup2_mount=procfs.cgroup2_mount())
        self.plane = dataplane.choose(self.settings.dataplane, render)
        self.reconciler = reconciler.Reconciler(
            self.plane,
            on_tamper=self._tampered,
            on_applied=self._applied,
            cutter=expiry.ExpiryCutter(),
            on_expired=self._expired_rule,
        )
        self._addresses = inventory.addresses()
        self.flows = flowtable.FlowTable(lambda: self._addresses, self._decide)
        with contextlib.suppress(OSError):
            conntrack.enable_accounting()
        saved = self._saved_document()
        self.client.hold(saved)  # the server's next change can then come as a delta to it
        self.reconciler.desire(saved)
        log.info(
            "enforcing %s before contacting %s", saved.hash if saved else "nothing yet", self.settings.server
        )
        threads = [
            threading.Thread(target=self._guard(self._feed), name="feed", daemon=True),
            threading.Thread(target=self._guard(self._observe), name="observe", daemon=True),
            threading.Thread(target=self._guard(self._upload), name="upload", daemon=True),
            threading.Thread(target=self._guard(self._report), name="report", daemon=True),
        ]
        for thread in threads:
            thread.start()
        while not self.stop_event.wait(self.settings.interval):
            self.reconciler.tick()
            if self.reconciler.status.errors:
                self.report_now.set()
        for thread in threads:  # daemon threads: one stuck in a long-poll must not hold the exit
            thread.join(timeout=1)
        self._spool_flows()
        self.client.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.report_now.set()

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        """A thread body that logs and restarts its loop after an unexpected error."""

        def run() -> None:
            while not self.stop_event.is_set():
                try:
                    body()
                    return
                except Exception:  # a bug in one loop must not end enforcement
                    log.exception("agent loop %s failed; restarting it", threading.current_thread().name)
                    self.stop_event.wait(2.0)

        return run

    # -- enforcement ----------------------------------------------------------------------------

    def _saved_document(self) -> ruleset.RulesetDocument | None:
        data = _read_json(self.dir / "ruleset.json")
        if not data:
            return None
        try:
            return ruleset.RulesetDocument.from_dict(data)
        except errors.MicrosegError as exc:
            log.error("ignoring the saved ruleset: %s", exc)
            return None

    def _applied(self, doc: ruleset.RulesetDocument | None) -> None:
        if doc is not None:
            _write_json(self.dir / "ruleset.json", doc.to_dict())
        self.report_now.set()

    def _tampered(self, tamper: reconciler.Tamper) -> None:
        with self._lock:
            self._tamper.append(
                {
                    "at": tamper.at,
                    "summary": tamper.drift.summary,
                    "changes": list(tamper.drift.changes),
                    "restoredIn": round(tamper.restored_in, 4),
                }
            )
            self._last_tamper = time.time()
        self.report_now.set()

    def _expired_rule(self, item: expiry.Expiry) -> None:
        with self._lock:
            self._expired.append(
                {
                    "rule": item.ref,
                    "notAfter": item.not_after,
                    "at": item.at,
                    "cut": item.cut,
                    "wouldCut": item.would_cut,
                }
            )
            del self._expired[:-MAX_EXPIRED]  # a report carries so many; the log has every one
        self.report_now.set()

    def _decide(
        self, direction: str, peer: str, local: str, proto: str, port: int | None
    ) -> tuple[str, str | None]:
        assert self.reconciler is not None
        doc = self.reconciler.desired
        if doc is None:
            return "allow", None
        known = {p.value for p in services.Protocol}
        protocol = services.Protocol(proto) if proto in known else services.Protocol.ANY
        way: semantics.Direction = "ingress" if direction == "in" else "egress"
        peer_at, local_at = addresses.address(peer), addresses.address(local)
        action, ref = semantics.decide(doc, way, peer_at, local_at, protocol, port, time.time())
        return action.value, ref

    # -- server ---------------------------------------------------------------------------------

    def _enroll(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set() and not self.client.credential:
            if not self.settings.enroll_token:
                raise errors.UserError("no credential in the state directory and no --enroll-token")
            try:
                found = self.client.enroll(self.settings.enroll_token, self._inventory())
                self.identity = {"server": self.settings.server, **found}
                _write_json(self.dir / "agent.json", self.identity, private=True)
                log.info("enrolled as %s (workload %s)", found["agentId"], found["workload"])
                return
            except (api.Unreachable, api.Refused) as exc:
                log.warning("enrollment failed: %s", exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _feed(self) -> None:
        assert self.reconciler is not None
        self._enroll()
        backoff, outage = 0.5, False
        while not self.stop_event.is_set():
            desired = self.reconciler.desired
            try:
                # After an outage, ask without waiting first: the server learns at once that we are
                # back (a status report follows), instead of when a long-poll ends.
                wait = 0.0 if outage else self.settings.long_poll
                doc = self.client.ruleset(desired.hash if desired else None, wait)
                if outage:
                    log.info("server reachable again")
                    self._reported = None
                    self.report_now.set()
                backoff, outage = 0.5, False
            except api.Unreachable as exc:
                if not outage:
                    log.warning("server unreachable, enforcing what we have: %s", exc)
                outage = True
                # Capped low: when the server is back, a quarantine must reach us within seconds.
                self.stop_event.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 2.0)
                continue
            except api.Refused as exc:
                log.error("the server refused the ruleset request: %s", exc)
                self.stop_event.wait(10.0)
                continue
            except errors.ValidationError as exc:  # a malformed document: keep the previous one
                log.error("refusing a malformed ruleset document: %s", exc)
                self.reconciler.status.errors = [f"document refused: {exc}"]
                self.report_now.set()
                self.stop_event.wait(5.0)
                continue
            if doc is not None:
                self.reconciler.desire(doc)

    def _inventory(self) -> dict[str, Any]:
        return inventory.collect(self.settings.hostname, self.settings.kind)

    def _status(self) -> dict[str, Any]:
        assert self.reconciler is not None
        status = self.reconciler.status
        with self._lock:
            tamper = list(self._tamper)
            expired = list(self._expired)
            recent = time.time() - self._last_tamper < self.settings.tamper_visible
        return {
            "appliedHash": status.applied_hash,
            "dataplane": status.dataplane,
            "errors": list(status.errors),
            "warnings": [*status.warnings, *self._observing_warnings, *self._spool_warnings()],
            "tampered": recent,
            "tamper": tamper,
            **({"counters": self._counters} if self._counters is not None else {}),
            **({"expired": expired} if expired else {}),  # absent when empty: older servers refuse it
        }

    def _read_counters(self) -> None:
        """The rule counters in report form: rules that counted anything, most packets first,
        within what the server accepts."""
        assert self.reconciler is not None
        try:
            found = self.reconciler.counters()
        except errors.MicrosegError as exc:  # the last reading stands; the next one may work
            log.debug("reading rule counters failed: %s", exc)
            return
        counted = sorted(
            (item for item in found.rules.items() if item[1].packets or item[1].bytes),
            key=lambda item: (-item[1].packets, item[0]),
        )
        rules = [{"rule": ref, "packets": c.packets, "bytes": c.bytes} for ref, c in counted[:MAX_COUNTED]]
        self._counters = {"epoch": found.epoch, "rules": rules}

    def _spool_warnings(self) -> list[str]:
        if not self.spool.dropped_batches:
            return []
        return [
            f"flow spool full while the server was away: {self.spool.dropped_records} flow records "
            f"({self.spool.dropped_batches} batches) dropped, oldest first"
        ]

    def _report(self) -> None:
        looked = sent = counted = -1e18
        last_inventory: dict[str, Any] | None = None
        while not self.stop_event.is_set():
            if not self.client.credential:
                self.stop_event.wait(0.5)
                continue
            try:
                if time.monotonic() - counted >= self.settings.counters_every:
                    counted = time.monotonic()
                    self._read_counters()
                status = self._status()
                if status != self._reported:
                    self.client.status(status)
                    self._reported = {**status, "tamper": []}
                    expired = self._reported.pop("expired", [])
                    with self._lock:
                        del self._tamper[: len(status["tamper"])]
                        del self._expired[: len(expired)]
                now = time.monotonic()
                if now - looked >= 5.0:  # listing sockets scans /proc: not every second
                    looked = now
                    found = self._inventory()
                    self._addresses = found["addresses"]
                    if found != last_inventory or now - sent >= self.settings.heartbeat_every:
                        self.client.heartbeat(found)
                        last_inventory, sent = found, now
            except (api.Unreachable, api.Refused) as exc:
                log.debug("report failed: %s", exc)
            self.report_now.wait(1.0)
            self.report_now.clear()

    # -- observation ----------------------------------------------------------------------------

    def _observe(self) -> None:
        assert self.flows is not None
        ct = conntrack.ConntrackListener(skip_loopback=True)  # the flow table ignores loopback
        try:
            logs: nflog.NflogListener | None = nflog.NflogListener(self.settings.render.log_group)
        except errors.MicrosegError as exc:
            log.error("no NFLOG: blocked and would-block flows are not reported: %s", exc)
            self._observing_warnings = [f"blocked and would-block flows are not reported: {exc}"]
            logs = None
        owners = procfs.OwnerIndex()
        waiting: list[conntrack.CtEvent] = []
        last_upload = last_dump = time.monotonic()
        readers = [ct.fileno()] + ([logs.fileno()] if logs else [])
        try:
            while not self.stop_event.is_set():
                ready, _, _ = select.select(readers, [], [], 0.2)
                if ct.fileno() in ready and self._read_conntrack(ct, owners, waiting):
                    last_dump = 0.0
                if logs is not None and logs.fileno() in ready:
                    for packet in logs.read():
                        self.flows.on_log(packet, self._owner(owners, packet))
                self._attribute_waiting(owners, waiting)
                if ready and self.settings.observe_batch > 0:
                    # Let the next events pile up a moment: one wake-up per batch, not per event, is
                    # most of the agent's CPU at a steady connection rate (the kernel buffers them).
                    # After the reading, not before, so a connection's socket is looked up at once.
                    time.sleep(self.settings.observe_batch)
                now = time.monotonic()
                if now - last_dump >= self.settings.dump_every:
                    asked = time.time()
                    self.flows.on_dump(conntrack.entries(), asked, lambda ev: self._owner(owners, ev))
                    last_dump = now
                if now - last_upload >= self.settings.upload_every:
                    self._spool_flows()
                    last_upload = now
        finally:
            ct.close()
            if logs is not None:
                logs.close()

    def _read_conntrack(
        self, ct: conntrack.ConntrackListener, owners: procfs.OwnerIndex, waiting: list[conntrack.CtEvent]
    ) -> bool:
        """Hand what conntrack reported to the flow table, `READ_CHUNK` events at a time (a backlog
        of 100,000 events read at once held them all in memory at the same time), at most
        `READ_MAX` per call so that NFLOG, dumps and spooling get their turn under any load;
        True when the kernel dropped events meanwhile."""
        lost = False
        for _ in range(READ_MAX // READ_CHUNK):
            events, dropped = ct.read(READ_CHUNK)
            lost = lost or dropped
            for ev in events:
                self._attribute(owners, ev, waiting)
            if len(events) < READ_CHUNK:
                break
        return lost

    def _owner(
        self, owners: procfs.OwnerIndex, ev: conntrack.CtEvent | nflog.LoggedPacket, guess: bool = True
    ) -> procfs.Process | None:
        """The local process of a connection: the server for inbound, the client for outbound."""
        if ev.dst in self._addresses:
            return owners.lookup(_proto(ev.proto), ev.dst, ev.dport or 0, ev.src, ev.sport or 0, guess=guess)
        return owners.lookup(_proto(ev.proto), ev.src, ev.sport or 0, ev.dst, ev.dport or 0, guess=guess)

    def _attribute(
        self, owners: procfs.OwnerIndex, ev: conntrack.CtEvent, waiting: list[conntrack.CtEvent]
    ) -> None:
        """Hand a conntrack event to the flow table with the process behind it. A new connection
        whose socket the last scan did not see, while scans are rate limited, waits for the next
        scan (at most `min_rescan` later) rather than being named after a guess; events behind a
        waiting one wait too, so a connection's DESTROY never overtakes its NEW."""
        assert self.flows is not None
        if waiting:
            waiting.append(ev)
            return
        if ev.kind != "new":
            self.flows.on_conntrack(ev, None)
            return
        fresh = owners.can_rescan()
        owner = self._owner(owners, ev, guess=fresh)
        if owner is None and not fresh:
            waiting.append(ev)
            return
        self.flows.on_conntrack(ev, owner)

    def _attribute_waiting(self, owners: procfs.OwnerIndex, waiting: list[conntrack.CtEvent]) -> None:
        assert self.flows is not None
        if not waiting or (not owners.can_rescan() and len(waiting) < 10_000):
            return
        owners.refresh()
        for ev in waiting:
            self.flows.on_conntrack(ev, self._owner(owners, ev) if ev.kind == "new" else None)
        waiting.clear()

    def _spool_flows(self) -> None:
        if self.flows is None:
            return
        records = self.flows.drain()
        for start in range(0, len(records), 5000):
            self.spool.put(records[start : start + 5000])

    def _upload(self) -> None:
        sender = uploader.Uploader(self.spool, self.client)
        while not self.stop_event.is_set():
            wait = sender.step() if self.client.credential else uploader.IDLE
            if wait:
                self.stop_event.wait(wait)


READ_CHUNK = 1000
"""Conntrack events read and handled at a time."""
READ_MAX = 100_000
"""Conntrack events handled per pass of the observe loop."""

MAX_COUNTED = 10_000
"""Rules per counter report (the server refuses longer lists)."""

MAX_EXPIRED = 100
"""Expired rules per status report (the server refuses longer lists)."""

_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmp"}


def _proto(number: int) -> str:
    return _PROTOCOLS.get(number, "other")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any], private: bool = False) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
