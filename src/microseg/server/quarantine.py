"""Quarantine and release: one call from a person, an EDR, an antivirus or a SIEM isolates a workload.

Quarantine sets the label `quarantine=true` (level `forensics`: the Settings' `quarantineAllow`
IP list still reaches it) or `quarantine=full` (only the agent's control-plane channel stays);
the built-in quarantine tier, evaluated first, does the rest, and a quarantined workload is
enforced whatever its mode. Release puts back exactly the labels and mode the workload had before
it was quarantined: the snapshot is the `before` of the quarantine's audit record, which is
written in the same transaction as the change, so it exists on every replica and survives
restarts. Addresses and attributes stay as the agent reports them now.

Every step is audited and recorded as an event (kinds `quarantine` and `release`), which is what
SIEM streaming forwards.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from microseg import errors
from microseg.model import workloads
from microseg.server import service
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import audit, events, objects, state

Doc = dict[str, Any]
QUARANTINE, RELEASE, RELEVEL = "quarantine", "release", "quarantine-level"
VERBS = {QUARANTINE: "quarantined", RELEASE: "released", RELEVEL: "quarantine level changed"}
ReleaseCheck = Callable[[sa.Connection, Doc | None], None]
"""Raises to refuse a release; gets the quarantine's audit record (None: set by editing labels)."""


def resolve(
    rt: Runtime,
    conn: sa.Connection,
    *,
    workload: str | None = None,
    address: str | None = None,
    hostname: str | None = None,
) -> str:
    """The workload named, holding `address`, or reporting `hostname` (exactly one must be given)."""
    found = candidates(rt, conn, workload=workload, address=address, hostname=hostname)
    if len(found) > 1:
        raise errors.ValidationError(f"hostname {hostname!r} is reported by {', '.join(found)}")
    return found[0]


def candidates(
    rt: Runtime,
    conn: sa.Connection,
    *,
    workload: str | None = None,
    address: str | None = None,
    hostname: str | None = None,
) -> list[str]:
    """Every workload that fits: one for a name or an address (addresses are never shared), and
    for a hostname every workload reporting it, sorted. Hostnames are the agents' word, so an
    agent can claim another's: an isolation must then take all of them, never none."""
    given = [k for k, v in (("workload", workload), ("address", address), ("hostname", hostname)) if v]
    if len(given) != 1:
        raise errors.ValidationError("name the workload by exactly one of workload, address and hostname")
    if workload:
        if objects.get(conn, "Workload", workload) is None:
            raise errors.LookupFailedError(f"no workload called {workload!r}")
        return [workload]
    stored = objects.of_kinds(conn, ("Workload",))
    if hostname:
        found = sorted(o.name for o in stored if _hostname(o.doc) == hostname)
        if not found:
            raise errors.LookupFailedError(f"no workload reports hostname {hostname!r}")
        return found
    try:
        wanted = ipaddress.ip_address(str(address))
    except ValueError:
        raise errors.ValidationError(f"{address!r} is not an IP address", "address") from None
    for o in stored:
        if any(wanted in net for net in rt.workloads.model(o.doc, o.etag).addresses):
            return [o.name]
    raise errors.LookupFailedError(f"no workload holds address {address}")


def _hostname(doc: Doc) -> str | None:
    found = (doc["spec"].get("attributes") or {}).get("hostname")
    return None if found is None else str(found)


def isolate(
    rt: Runtime, who: Principal, name: str, level: str, reason: str, *, check: ReleaseCheck | None = None
) -> Doc:
    """Quarantine `name` at `level` (`forensics` or `full`); quarantining again changes the level
    and keeps the first snapshot. Lowering `full` to `forensics` is a partial release: `check`
    (a webhook's scope) may refuse it, as a release."""
    value = workloads.QUARANTINE_LEVELS.get(level)
    if value is None:
        known = ", ".join(workloads.QUARANTINE_LEVELS)
        raise errors.ValidationError(f"level must be one of {known}", "level")
    with rt.db.write() as conn:
        old = _stored(conn, name)
        current = old.doc["metadata"].get("labels", {}).get(workloads.QUARANTINE_LABEL)
        if current == value:
            return _result(name, "unchanged", level)
        if check is not None and current == workloads.QUARANTINE_FULL:
            check(conn, audit.latest(conn, f"Workload/{name}", (QUARANTINE,)))
        new = copy.deepcopy(old.doc)
        new["metadata"].setdefault("labels", {})[workloads.QUARANTINE_LABEL] = value
        action = RELEVEL if current in workloads.QUARANTINE_LEVELS.values() else QUARANTINE
        _write(rt, conn, who, name, (old.doc, new), action=action, more={"level": level, "reason": reason})
    rt.poke()
    return _result(name, "quarantined", level)


def release(rt: Runtime, who: Principal, name: str, reason: str, *, check: ReleaseCheck | None = None) -> Doc:
    """Restore the labels and mode `name` had before its quarantine (409 when not quarantined).

    `check` (a webhook's scope) may refuse, in the same transaction, given the quarantine's record."""
    with rt.db.write() as conn:
        old = _stored(conn, name)
        if old.doc["metadata"].get("labels", {}).get(workloads.QUARANTINE_LABEL) not in (
            workloads.QUARANTINE_LEVELS.values()
        ):
            raise Problem(409, "Not quarantined", f"workload {name} is not quarantined")
        snapshot = audit.latest(conn, f"Workload/{name}", (QUARANTINE,))
        if check is not None:
            check(conn, snapshot)
        new = _restored(old.doc, snapshot["details"]["before"] if snapshot else None)
        _write(rt, conn, who, name, (old.doc, new), action=RELEASE, more={"reason": reason})
    rt.poke()
    return _result(name, "released", None)


def _restored(current: Doc, before: Doc | None) -> Doc:
    """`current` with the labels and mode of `before` (without a snapshot: the label removed)."""
    new = copy.deepcopy(current)
    if before is None:
        new["metadata"].get("labels", {}).pop(workloads.QUARANTINE_LABEL, None)
    else:
        new["metadata"]["labels"] = dict(before["metadata"].get("labels") or {})
        if "mode" in before.get("spec", {}):
            new["spec"]["mode"] = before["spec"]["mode"]
        else:
            new["spec"].pop("mode", None)
    if not new["metadata"].get("labels"):
        new["metadata"].pop("labels", None)
    return new


def _stored(conn: sa.Connection, name: str) -> objects.Stored:
    found = objects.get(conn, "Workload", name)
    if found is None:
        raise errors.LookupFailedError(f"no workload called {name!r}")
    return found


def _write(
    rt: Runtime,
    conn: sa.Connection,
    who: Principal,
    name: str,
    docs: tuple[Doc, Doc],
    *,
    action: str,
    more: dict[str, Any],
) -> None:
    old, new = docs
    service.validate(rt, conn, {("Workload", name): new})
    objects.put(conn, "Workload", name, new, who.actor)
    audit.record(conn, who.actor, action, f"Workload/{name}", {"before": old, "after": new, **more})
    why = f": {more['reason']}" if more.get("reason") else ""
    level = f" ({more['level']})" if more.get("level") else ""
    text = f"{name} {VERBS[action]}{level} by {who.actor}{why}"
    events.add(conn, action, name, text, {"actor": who.actor, **more})
    state.bump_inventory(conn)


def _result(name: str, outcome: str, level: str | None) -> Doc:
    return {"workload": name, "outcome": outcome, "level": level}
