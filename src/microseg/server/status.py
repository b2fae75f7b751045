"""What the server reports about workloads: effective labels, effective mode, agent state.

Fed by the compiled engine (effective labels and modes after label rules and mode scopes, and the
ruleset hash each agent should have applied) and the agents table; feeds workload listings and
/metrics. Agent state is `in sync` (applied the current document), `stale` (has not yet),
`failed` (reported errors) or `tampered` (found its table changed behind its back); a workload
without an agent shows `no agent`.
"""

from __future__ import annotations

import time
from typing import Any

from microseg.model import labelrules, workloads
from microseg.server import compose
from microseg.server.runtime import Runtime

STATES = ("in sync", "stale", "failed", "tampered", "no agent")


def agent_state(agent: dict[str, Any] | None, expected: str | None) -> str:
    """One of STATES, of an agent row (None: no agent)."""
    if agent is None:
        return "no agent"
    if agent.get("revoked_at") is not None:
        return "no agent"
    if agent["tampered"]:
        return "tampered"
    if agent["errors"]:
        return "failed"
    return "in sync" if agent["applied_hash"] == expected else "stale"


def agent_json(rt: Runtime, agent: dict[str, Any]) -> dict[str, Any]:
    """An agent for the API (never its credential)."""
    expected = rt.expected_hash(agent["workload"], latest=False)
    return {
        "id": agent["id"],
        "workload": agent["workload"],
        "state": agent_state(agent, expected),
        "online": agent["online"],
        "lastSeen": agent["last_seen"],
        "enrolledAt": agent["enrolled_at"],
        "enrollmentToken": agent.get("enrollment_token"),  # its grants bound it; None: before 0006
        "appliedHash": agent["applied_hash"],
        "expectedHash": expected,
        "dataplane": agent["dataplane"],
        "errors": agent["errors"],
        "warnings": agent.get("warnings") or [],
        "tampered": agent["tampered"],
        "revoked": agent["revoked_at"] is not None,
        "inventory": agent["inventory"],
        "silentFor": round(time.time() - agent["last_seen"], 1),
    }


def workload_status(
    w: workloads.Workload,
    rules: tuple[labelrules.LabelRule, ...],
    scopes: list[compose.ModeScope],
    agent: dict[str, Any] | None,
    expected: str | None,
) -> dict[str, Any]:
    """The `status` block of a workload: effective labels and mode, quarantine, agent state
    (against `expected`, the hash `Runtime.expected_hashes` gives for its document)."""
    own = labelrules.effective_labels(w, rules)
    scope = next(
        (s for s in sorted(scopes, key=lambda s: (s.priority, s.name)) if s.selector.matches(own)), None
    )
    # A label rule may quarantine too: judged on the effective labels, as the engine does.
    quarantined = workloads.quarantine_level(own) is not None
    mode = workloads.Mode.ENFORCE if quarantined else scope.mode if scope else w.mode
    return {
        "effectiveLabels": dict(own),
        "mode": mode.value,
        "modeFrom": "quarantine" if quarantined else f"ModeScope/{scope.name}" if scope else "workload",
        "quarantined": quarantined,
        "agent": agent_state(agent, expected),
    }
