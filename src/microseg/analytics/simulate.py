"""Simulation: replay stored flows against a draft and say what would change, and by which rule.

Fed by summary rows (through `flowset.flow_set`: each distinct flow is judged once, each of its
hours counted) and two engines, the active policy and the draft; every flow is evaluated by both
(the one verdict function), so enforcement modes are respected: a flow to an alert-mode workload
that the draft denies becomes would-block, not blocked. Feeds the API / CLI as JSON, a text table,
and Markdown for a pull-request comment.

Flows are classified by outcome change and grouped by (change, deciding draft rule, source labels,
destination labels) with connection counts and a few examples. This module does not decide
whether a change is acceptable; reviewers do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from microseg.analytics import collecting, flowset
from microseg.engine import engine as engine_mod
from microseg.model import verdicts

EXAMPLES_PER_GROUP = 3
"""Example flows kept per group (the counts cover all of them)."""

DEFAULT_DENY = "(default deny)"
"""The rule column of a verdict no rule decided."""


class Change(StrEnum):
    """How a flow's fate moves from the active policy to the draft."""

    NEWLY_BLOCKED = "newly-blocked"
    NEWLY_WOULD_BLOCK = "newly-would-block"
    NEWLY_ALLOWED = "newly-allowed"
    UNCHANGED = "unchanged"


_ORDER = tuple(Change)


def classify(active: verdicts.Verdict, draft: verdicts.Verdict) -> Change:
    """Blocked on the wire first, then newly logged as would-block, then newly allowed by policy."""
    if draft.outcome is verdicts.Outcome.BLOCKED and active.outcome is not verdicts.Outcome.BLOCKED:
        return Change.NEWLY_BLOCKED
    if draft.outcome is verdicts.Outcome.WOULD_BLOCK and active.outcome is verdicts.Outcome.ALLOWED:
        return Change.NEWLY_WOULD_BLOCK
    if draft.decision is verdicts.Decision.ALLOW and active.decision is verdicts.Decision.DENY:
        return Change.NEWLY_ALLOWED
    return Change.UNCHANGED


def peer_labels(peer: flowset.Peer) -> str:
    """How a group names one side: its labels, its IP list, or external."""
    if peer.is_workload:
        return str(peer.labels) if peer.labels else f"workload {peer.name} (no labels)"
    return f"ipList {peer.name}" if peer.kind is flowset.PeerKind.IP_LIST else flowset.EXTERNAL


@dataclass(frozen=True)
class Example:
    """One flow of a group, with both verdicts."""

    flow: str
    connections: int
    active_rule: str | None
    active_outcome: verdicts.Outcome
    draft_outcome: verdicts.Outcome
    draft_reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "flow": self.flow,
            "connections": self.connections,
            "activeRule": self.active_rule,
            "activeOutcome": self.active_outcome.value,
            "draftOutcome": self.draft_outcome.value,
            "draftReason": self.draft_reason,
        }


@dataclass(frozen=True)
class Group:
    """Flows with the same change, draft rule and label pair."""

    change: Change
    rule: str
    source: str
    destination: str
    flows: int
    connections: int
    examples: tuple[Example, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "change": self.change.value,
            "rule": self.rule,
            "source": self.source,
            "destination": self.destination,
            "flows": self.flows,
            "connections": self.connections,
            "examples": [e.to_json() for e in self.examples],
        }


@dataclass(frozen=True)
class Simulation:
    """What the draft would do to the replayed flows."""

    groups: tuple[Group, ...]
    skipped_rows: int = 0
    """Summary rows left out because they do not check out (`flowset`)."""

    def connections(self, change: Change) -> int:
        """Connections with this change."""
        return sum(g.connections for g in self.groups if g.change is change)

    def flow_count(self, change: Change) -> int:
        """Flows with this change."""
        return sum(g.flows for g in self.groups if g.change is change)

    def to_json(self) -> dict[str, Any]:
        """JSON: totals per change (flows and connections) and the groups."""
        return {
            "totals": {
                c.value: {"flows": self.flow_count(c), "connections": self.connections(c)} for c in Change
            },
            "groups": [g.to_json() for g in self.groups],
            "skippedRows": self.skipped_rows,
        }

    def to_table(self) -> str:
        """Plain-text table of the groups, for the terminal."""
        header = ("CHANGE", "RULE", "SOURCE", "DESTINATION", "FLOWS", "CONNECTIONS")
        body = [
            (g.change.value, g.rule, g.source, g.destination, str(g.flows), str(g.connections))
            for g in self.groups
        ]
        widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
        return (
            "\n".join(
                "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                for r in (header, *body)
            )
            + "\n"
        )

    def to_markdown(self) -> str:
        """Markdown for a pull-request comment: totals, then the changed groups with examples."""
        out = ["### Policy simulation", "", "| change | flows | connections |", "|---|---:|---:|"]
        out += [f"| {c.value} | {self.flow_count(c)} | {self.connections(c)} |" for c in Change]
        changed = [g for g in self.groups if g.change is not Change.UNCHANGED]
        if not changed:
            out += ["", "No replayed flow changes its outcome under the draft."]
            return "\n".join(out) + "\n"
        out += ["", "| change | draft rule | source | destination | flows | connections | example |"]
        out.append("|---|---|---|---|---:|---:|---|")
        for g in changed:
            example = _md(g.examples[0].flow) if g.examples else ""
            cells = (g.change.value, _md(g.rule), _md(g.source), _md(g.destination))
            out.append(f"| {' | '.join(cells)} | {g.flows} | {g.connections} | `{example}` |")
        return "\n".join(out) + "\n"


def _md(text: str) -> str:
    """A Markdown table cell: pipes escaped, backticks removed (they would end a code span)."""
    return text.replace("|", "\\|").replace("`", "'")


_GroupKey = tuple[Change, str, str, str]
"""change, deciding draft rule, source labels, destination labels."""


@collecting.while_paused
def simulate(
    rows: Iterable[flowset.Row],
    active_engine: engine_mod.PolicyEngine,
    draft_engine: engine_mod.PolicyEngine,
) -> Simulation:
    """Replay `rows` against both engines and group the flows by how their outcome changes."""
    window = flowset.flow_set(rows, active_engine)
    judge_active, judge_draft = flowset.Judge(active_engine), flowset.Judge(draft_engine)
    replayed = [_replay(flow, judge_active(flow), judge_draft(flow)) for flow in window.distinct]
    groups: dict[_GroupKey, tuple[list[int], list[Example]]] = {}
    for index, connections in window.occurrences:
        key, active, draft = replayed[index]
        counts, examples = groups.setdefault(key, ([0, 0], []))
        counts[0] += 1
        counts[1] += connections
        if len(examples) < EXAMPLES_PER_GROUP:
            examples.append(_example(window.distinct[index], connections, active, draft))
    ordered = sorted(groups.items(), key=lambda kv: (_ORDER.index(kv[0][0]), -kv[1][0][1], kv[0][1:]))
    return Simulation(tuple(Group(*key, c[0], c[1], tuple(ex)) for key, (c, ex) in ordered), window.skipped)


def _replay(
    flow: flowset.Flow, active: verdicts.Verdict, draft: verdicts.Verdict
) -> tuple[_GroupKey, verdicts.Verdict, verdicts.Verdict]:
    """A distinct flow's group and both verdicts (every occurrence of it shares them)."""
    key = (
        classify(active, draft),
        draft.rule or DEFAULT_DENY,
        peer_labels(flow.source),
        peer_labels(flow.destination),
    )
    return key, active, draft


def _example(
    flow: flowset.Flow, connections: int, active: verdicts.Verdict, draft: verdicts.Verdict
) -> Example:
    return Example(flow.describe(), connections, active.rule, active.outcome, draft.outcome, draft.reason)
