"""The flow summary query (`GET /api/v1/flows/summary`), flow and event retention, and the admin's
purge of one reporter's or one window's flow data (`DELETE /api/v1/flows`).

Fed by the flow summaries store (`store.summaries`, filled at agent ingest) and by the workloads
as they are now: each row's ends are resolved to workloads when the query runs (labels and
addresses change, so resolving at ingest would go stale), with the active engine when a version
is provisioned and with the stored workloads and label rules before that. Feeds the CLI's
`microseg flows` and the web UI.

What it deliberately does not do: merge the two reports of one connection (both ends report it;
rows keep `reporter` and `direction`) or compute maps; the analytics do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from microseg import errors
from microseg.model import addresses, labelrules, selectors
from microseg.model.workloads import Workload
from microseg.server import auth, deps, service
from microseg.server.auth import Principal
from microseg.server.runtime import Runtime
from microseg.store import audit, events, objects, rulecounters, summaries

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Admin = Annotated[Principal, Depends(auth.admin)]
router = APIRouter(prefix="/api/v1", tags=["flows"])
log = logging.getLogger("microseg.server")
DAY = 86_400.0
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
EXPIRE_EVERY = 3600.0
"""Seconds between two retention passes of one server process."""


# -- who is at each end ---------------------------------------------------------------------------


@dataclass
class Directory:
    """Addresses -> workload names and names -> effective labels, as of one moment."""

    hosts: dict[addresses.Address, str] = field(default_factory=dict)
    networks: list[tuple[addresses.Network, str]] = field(default_factory=list)
    labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    _owners: dict[str, str | None] = field(default_factory=dict)

    @staticmethod
    def of(found: Iterable[tuple[Workload, Mapping[str, str]]]) -> Directory:
        """A directory of workloads with their effective labels."""
        made = Directory()
        for workload, labels in found:
            made.labels[workload.name] = labels
            for net in workload.addresses:
                if net.num_addresses == 1:
                    made.hosts[net.network_address] = workload.name
                else:
                    made.networks.append((net, workload.name))
        return made

    def owner(self, end: str) -> str | None:
        """The workload at an address (hosts exactly, unmanaged networks by containment), or None
        for an external one; remembered, since one address appears in many rows."""
        if end not in self._owners:
            self._owners[end] = self._lookup(end)
        return self._owners[end]

    def _lookup(self, end: str) -> str | None:
        if end in self.labels:
            return end  # an agent that reports a name rather than an address
        try:
            addr = ipaddress.ip_address(end)
        except ValueError:
            return None
        found = self.hosts.get(addr)
        if found is None:
            found = next((name for net, name in self.networks if addr in net), None)
        return found


def directory(rt: Runtime) -> Directory:
    """The workloads as the active engine has them, or as stored while nothing is provisioned."""
    compiled = rt.compiled()
    engine = compiled.engine
    if engine is not None:
        with rt.engine_lock:  # the engine's caches are not meant for two threads at once
            return Directory.of((w, engine.effective_labels(n)) for n, w in compiled.workloads.items())
    with rt.db.read() as conn:
        stored = objects.of_kinds(conn, ("Workload",))
        rules = service.label_rules(conn)
    models = [rt.workloads.model(o.doc, o.etag) for o in stored]
    return Directory.of((w, labelrules.effective_labels(w, rules)) for w in models)


# -- the request ----------------------------------------------------------------------------------


def parse_since(text: str | None, now: float) -> float | None:
    """Epoch seconds, or a duration back from now (`30m`, `24h`, `7d`, `2w`, `90s`)."""
    if text is None or text == "":
        return None
    matched = DURATION.fullmatch(text.strip())
    if matched:
        return now - float(matched[1]) * UNITS[matched[2]]
    try:
        value = float(text)
    except ValueError:
        raise errors.ValidationError(
            f"since {text!r}: give epoch seconds or a duration like 30m, 24h, 7d", "since"
        ) from None
    if not 0 <= value <= 2**40:
        raise errors.ValidationError(f"since {text!r}: out of range", "since")
    return value


def _parse_selector(text: str | None) -> selectors.LabelSelector | None:
    if not text:
        return None
    try:
        return selectors.LabelSelector.parse(text)
    except errors.ValidationError as exc:
        raise errors.ValidationError(f"selector {text!r}: {exc}", "selector") from None


def _end_test(want: str | None, side: str, where: Directory) -> Callable[[summaries.Row], bool] | None:
    """Whether a row's `side` end is `want` (a workload name or an address)."""
    if want is None:
        return None
    return lambda row: row[side] == want or where.owner(row[side]) == want


def _label_test(
    sel: selectors.LabelSelector | None, where: Directory
) -> Callable[[summaries.Row], bool] | None:
    """Whether either end is a workload whose effective labels match (external ends never do)."""
    if sel is None:
        return None

    def matches(end: str) -> bool:
        name = where.owner(end)
        return name is not None and sel.matches(where.labels[name])

    return lambda row: matches(row["src"]) or matches(row["dst"])


def keep(tests: Iterable[Callable[[summaries.Row], bool] | None]) -> Callable[[summaries.Row], bool] | None:
    """All of the tests given (None when there are none)."""
    chosen = [t for t in tests if t is not None]
    if not chosen:
        return None
    return lambda row: all(t(row) for t in chosen)


def _with_workloads(row: summaries.Row, where: Directory) -> dict[str, Any]:
    return {**row, "srcWorkload": where.owner(row["src"]), "dstWorkload": where.owner(row["dst"])}


@router.get("/flows/summary", summary="Flow summaries per hour, by labels, ends, port, process and verdict")
def read_summary(
    *,
    rt: Rt,
    _: Viewer,
    selector: Annotated[str | None, Query(max_length=2000, description="kubectl syntax, either end")] = None,
    src: Annotated[str | None, Query(max_length=300, description="workload name or address")] = None,
    dst: Annotated[str | None, Query(max_length=300, description="workload name or address")] = None,
    port: Annotated[int | None, Query(ge=0, le=65535)] = None,
    proto: Annotated[str | None, Query(pattern="^(tcp|udp|sctp|icmp|other)$")] = None,
    process: Annotated[str | None, Query(max_length=300, description="glob on name or path")] = None,
    verdict: Annotated[str | None, Query(pattern="^(allowed|blocked|would-block)$")] = None,
    since: Annotated[str | None, Query(max_length=32, description="epoch seconds, or 30m, 24h, 7d")] = None,
    until: Annotated[float | None, Query(ge=0, le=2**40)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    after: Annotated[int, Query(alias="continue", ge=0, le=2**63 - 1)] = 0,
) -> dict[str, Any]:
    """Rows in the agreed summary shape plus `srcWorkload` / `dstWorkload` (null when external),
    oldest first; `continue` is the next page's token (null on the last page)."""
    sel = _parse_selector(selector)
    start = parse_since(since, time.time())
    where = directory(rt)
    tests = (_end_test(src, "src", where), _end_test(dst, "dst", where), _label_test(sel, where))
    filters = summaries.Filters(start, until, port, proto, verdict, process or None, keep=keep(tests))
    with rt.db.read() as conn:
        rows, more = summaries.page(conn, filters, after, limit)
    return {"items": [_with_workloads(r, where) for r in rows], "continue": more}


# -- retention ------------------------------------------------------------------------------------


def retention_days(rt: Runtime) -> float:
    """`flow_retention_days` from the server settings."""
    days: float = rt.settings.flow_retention_days
    return days


def expire(rt: Runtime, now: float | None = None) -> tuple[int, int]:
    """Drop summaries, raw batches and rule-counter hours older than the retention, flows dated
    over a day past the clock skew (stored before ingest refused them: they would never expire),
    and events older than the event retention; (summaries, batches) dropped."""
    now = time.time() if now is None else now
    before = now - retention_days(rt) * DAY
    with rt.db.write() as conn:
        rulecounters.expire(conn, before)
        events.expire(conn, now - rt.settings.event_retention_days * DAY)
        # a day past the skew: replicas' clocks may differ, and only poison lies years ahead
        return summaries.expire(conn, before, beyond=now + rt.settings.flow_clock_skew + DAY)


async def expirer(rt: Runtime, every: float = EXPIRE_EVERY) -> None:
    """Apply the retention every `every` seconds (a lifespan task; any replica may run it, since
    expiring twice drops nothing more). The first run waits one interval too: a server that
    restarts after a crash keeps what it had long enough for someone to look."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(expire, rt)
        except Exception:  # a database hiccup must not end retention; it is logged and retried
            log.warning("flow retention failed; retrying", exc_info=True)


# -- purge ----------------------------------------------------------------------------------------


@router.delete("/flows", summary="Purge flow data by reporter and window (admin; audited)")
def purge_flows(
    *,
    rt: Rt,
    who: Admin,
    reporter: Annotated[str | None, Query(max_length=300, description="the reporting workload")] = None,
    since: Annotated[str | None, Query(max_length=32, description="epoch seconds, or 30m, 24h, 7d")] = None,
    until: Annotated[float | None, Query(ge=0, le=2**40)] = None,
) -> dict[str, Any]:
    """Drop flow summaries, raw batches and rule-counter hours of `reporter` (all reporters when
    left out) overlapping [since, until); at least one of the three must be given. The counts
    dropped per table are the answer and go into the audit record."""
    what = summaries.Purge(reporter or None, parse_since(since, time.time()), until)
    if what == summaries.Purge():
        raise errors.ValidationError(
            "give a reporter, since or until (or several): a purge of everything is refused", "reporter"
        )
    with rt.db.write() as conn:
        dropped = summaries.purge(conn, what)
        asked = {"reporter": reporter, "since": what.since, "until": until, "dropped": dropped}
        audit.record(conn, who.actor, "flows-purge", f"Flows/{reporter or '*'}", asked)
    return {"dropped": dropped}
