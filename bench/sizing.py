"""docs/scale-out.md's sizing table, generated from the server bench's results (bench/results/server.json).

Fed by the envelope `bench/runner.py` writes; feeds the block of docs/scale-out.md between
`<!-- generated:sizing -->` and `<!-- /generated -->` (rewritten by `bench/report.py` together with
BENCHMARKS.md). It states what one replica was measured doing, per database, never a capacity
nobody ran: a figure that is missing reads "not measured".
"""

from __future__ import annotations

from typing import Any

import targets

ROWS: tuple[tuple[str, str, str], ...] = (
    ("agents long-polling one replica", "fleet.agents", ",.0f"),
    ("workloads / label rules of that estate", "fleet.workloads|fleet.rules", ",.0f"),
    ("enrollment, agents per second (last tenth of the run)", "fleet.enroll_per_s", ",.0f"),
    ("provision -> the last agent has its ruleset (s)", "fleet.seconds_to_last_agent", ",.2f"),
    ("bytes sent to every agent for a one-rule change (MB)", "fleet.bytes_sent_mb", ",.1f"),
    ("relabel one workload -> every affected agent updated (s)", "fleet.relabel_s", ",.2f"),
    ("API p99 during that fan-out (ms)", "fleet.api_p99_ms", ",.0f"),
    ("server RSS with every agent parked (MB)", "fleet.rss_mb", ",.0f"),
    ("flow ingest, records per second (batches of 1,000, invariants in force)",
     "ingest.records_per_second", ",.0f"),
)  # fmt: skip


def _cell(figures: dict[str, Any], backend: str, paths: str, spec: str) -> str:
    shown = []
    for dotted in paths.split("|"):
        value = targets.path(f"runs.{backend}.{dotted}")(figures)
        if value is None:
            return "not measured"
        shown.append(format(value, spec))
    return " / ".join(shown)


def block(results: dict[str, Any] | None, provenance: str) -> str:
    """The Markdown of the sizing block, under `provenance` (where its figures came from, as
    BENCHMARKS.md says it)."""
    if results is None:
        return "No server results yet: run `bench/run`.\n"
    figures = results["figures"]
    names = [targets.BACKEND_NAMES[b] for b in targets.BACKENDS]
    lines = [
        provenance.strip(),
        "",
        "| one replica | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for what, paths, spec in ROWS:
        cells = [_cell(figures, b, paths, spec) for b in targets.BACKENDS]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
