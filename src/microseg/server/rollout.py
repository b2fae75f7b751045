"""Rollout per label scope: visibility -> alert -> enforce, promoted only when the scope is ready.

A scope is a kubectl selector (`env=prod,app=crm`); its mode is a ModeScope object named
`rollout-<scope>` (live inventory: it applies at once, no provision). Readiness, over a window of
stored flows (default 7 days) and the active version:

- **would-block**: connections of the scope's workloads seen as would-block (alert mode) in the
  window: what enforcing would have cut;
- **coverage**: the share of the scope's observed connections the active policy allows now (what
  the recommendations and rules already cover); the rest is listed with the deciding verdict;
- **agents in sync**: the share of the scope's managed workloads whose agent applied the
  current ruleset.

Promoting to `enforce` needs all three within their thresholds; to `alert` only the agents (alert
blocks nothing, but a stale agent would log against an old ruleset); to `visibility` nothing
(stepping back is always safe). A refused promotion changes nothing (409 with the report); with
`force` it goes through and the override is audited with the report.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from microseg import errors
from microseg.analytics import flowset
from microseg.model import selectors, verdicts, workloads
from microseg.server import kinds, routes_flows, service, status
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, audit, objects, summaries

DEFAULT_WINDOW = "7d"
SCOPE_PRIORITY = 50
"""Rollout scopes sit before hand-made ModeScopes of the default priority 100."""
EXAMPLES = 10


@dataclass(frozen=True)
class Thresholds:
    """What `ready` means."""

    min_coverage: float = 99.0
    """Percent of the scope's observed connections the active policy must allow."""
    max_would_block: int = 0
    """Would-block connections the window may hold."""
    min_in_sync: float = 100.0
    """Percent of the scope's agents that must have applied the current ruleset."""


def scope_name(scope: str) -> str:
    """The ModeScope a rollout scope is stored as: `rollout-env-prod-app-crm`."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", scope).strip("-").lower()
    return f"rollout-{slug}"[:253].rstrip("-")


def _selector(scope: str) -> selectors.LabelSelector:
    sel = selectors.LabelSelector.parse(scope)
    if not sel.requirements:
        raise errors.ValidationError("a scope needs at least one label (e.g. env=prod,app=crm)", "scope")
    return sel


def readiness(rt: Runtime, scope: str, since: str | None, limits: Thresholds) -> dict[str, Any]:
    """The readiness report of one scope."""
    sel = _selector(scope)
    now = time.time()
    start = routes_flows.parse_since(since or DEFAULT_WINDOW, now)
    eng = rt.snapshot()  # seconds of work: not under the engine lock (`Runtime.snapshot`)
    if eng is None:
        raise Problem(409, "Nothing provisioned", "readiness is measured against the active version")
    with rt.db.read() as conn:
        rows = summaries.records(conn, since=start)  # the window folded in the database
        agent_rows = {a["workload"]: a for a in agents.listing(conn)}
    members = [n for n in eng.workload_names() if sel.matches(eng.effective_labels(n))]
    inside = set(members)
    window = flowset.flow_set(rows, eng)
    flows = [f for f in window.distinct if f.source.name in inside or f.destination.name in inside]
    judge = flowset.Judge(eng)
    judged = [(f, judge(f)) for f in flows]
    managed = [n for n in members if eng.workload(n).managed]
    modes = _modes(eng.workload(n).mode for n in members)
    expected = rt.expected_hashes(list(managed))
    states = {n: status.agent_state(agent_rows.get(n), expected[n]) for n in managed}
    report = _report(
        scope, window=(start, now), members=members, modes=modes, states=states, judged=judged, limits=limits
    )
    return {**report, "skippedRows": window.skipped}  # rows that do not check out (flowset)


def _modes(found: Any) -> dict[str, int]:
    out = {m.value: 0 for m in workloads.Mode}
    for mode in found:
        out[mode.value] += 1
    return out


def _report(
    scope: str,
    *,
    window: tuple[float | None, float],
    members: list[str],
    modes: dict[str, int],
    states: dict[str, str],
    judged: list[tuple[flowset.Flow, verdicts.Verdict]],
    limits: Thresholds,
) -> dict[str, Any]:
    total = sum(f.connections for f, _ in judged)
    allowed = sum(f.connections for f, v in judged if v.decision is verdicts.Decision.ALLOW)
    would_block = [f for f, _ in judged if f.verdict is verdicts.Outcome.WOULD_BLOCK]
    uncovered = sorted(
        ((f, v) for f, v in judged if v.decision is not verdicts.Decision.ALLOW),
        key=lambda p: -p[0].connections,
    )
    coverage = 100.0 if total == 0 else round(100.0 * allowed / total, 2)
    in_sync = sum(1 for s in states.values() if s == "in sync")
    synced = 100.0 if not states else round(100.0 * in_sync / len(states), 2)
    wb = sum(f.connections for f in would_block)
    checks = {
        "wouldBlock": {"value": wb, "limit": limits.max_would_block, "ok": wb <= limits.max_would_block},
        "coverage": {"value": coverage, "limit": limits.min_coverage, "ok": coverage >= limits.min_coverage},
        "agentsInSync": {"value": synced, "limit": limits.min_in_sync, "ok": synced >= limits.min_in_sync},
    }
    return {
        "scope": scope,
        "window": {"since": window[0], "until": window[1]},
        "workloads": len(members),
        "modes": modes,
        "agents": {state: sum(1 for s in states.values() if s == state) for state in status.STATES},
        "connections": {"total": total, "allowed": allowed, "wouldBlockSeen": wb},
        "checks": checks,
        "uncovered": [
            {"flow": f.describe(), "connections": f.connections, "verdict": v.to_dict()}
            for f, v in uncovered[:EXAMPLES]
        ],
        "notInSync": sorted(n for n, s in states.items() if s != "in sync")[:EXAMPLES],
    }


GATES = {
    workloads.Mode.ENFORCE: ("wouldBlock", "coverage", "agentsInSync"),
    workloads.Mode.ALERT: ("agentsInSync",),
    workloads.Mode.VISIBILITY: (),
}


def promote(
    rt: Runtime,
    who: Principal,
    scope: str,
    to: workloads.Mode,
    *,
    since: str | None,
    limits: Thresholds,
    force: bool,
    note: str,
) -> dict[str, Any]:
    """Set the scope's mode when it is ready for it (or when forced, audited)."""
    report = readiness(rt, scope, since, limits)
    failed = [name for name in GATES[to] if not report["checks"][name]["ok"]]
    if failed and not force:
        raise Problem(
            409,
            "Scope not ready",
            f"{scope} is not ready for {to.value}: {', '.join(_why(report, f) for f in failed)}; "
            "nothing changed (fix it, or promote with force)",
            readiness=report,
            failed=failed,
        )
    name = scope_name(scope)
    doc = {
        "apiVersion": kinds.API_VERSION,
        "kind": "ModeScope",
        "metadata": {"name": name},
        "spec": {"selector": scope, "mode": to.value, "priority": SCOPE_PRIORITY},
    }
    service.save(rt, who, doc)
    details = {"scope": scope, "to": to.value, "note": note, "failed": failed, "readiness": report}
    with rt.db.write() as conn:
        audit.record(conn, who.actor, "rollout-promote", f"ModeScope/{name}", details)
        if failed:
            audit.record(conn, who.actor, "override-readiness", f"ModeScope/{name}", details)
    return {"scope": scope, "modeScope": name, "mode": to.value, "forced": bool(failed), "readiness": report}


def _why(report: dict[str, Any], check: str) -> str:
    c = report["checks"][check]
    return {
        "wouldBlock": f"{c['value']} would-block connection(s) in the window (at most {c['limit']})",
        "coverage": f"the active policy allows {c['value']}% of observed connections (needs {c['limit']}%)",
        "agentsInSync": f"{c['value']}% of agents in sync (needs {c['limit']}%)",
    }[check]


def scopes(rt: Runtime) -> list[dict[str, Any]]:
    """The rollout scopes and their modes."""
    with rt.db.read() as conn:
        found = objects.of_kinds(conn, ("ModeScope",))
    return [
        {"scope": o.doc["spec"]["selector"], "modeScope": o.name, "mode": o.doc["spec"]["mode"]}
        for o in found
        if o.name.startswith("rollout-")
    ]
