"""/metrics in the Prometheus text format: agents by state, provisions, flow ingest, compile latency.

Agents by state compare what each agent applied with its document's hash in the engine built last
(during a compile, the one before: a scrape neither waits for a compile nor computes documents,
whose hashes come with each build). Database-backed figures are the same on every replica; counters
of work done (flow records ingested, compiles and their seconds) are this process's own, which is
what Prometheus expects of replicas it scrapes one by one.
"""

from __future__ import annotations

from microseg.server import collector, status
from microseg.server.runtime import Runtime
from microseg.store import agents, versions

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def render(rt: Runtime) -> str:
    """The exposition text."""
    with rt.db.read() as conn:
        counted = agents.tally(conn)
        provisions = versions.count(conn)
    expected = rt.expected_hashes([w for w, _ in counted.applied], latest=False)
    in_sync = sum(1 for w, applied in counted.applied if applied == expected[w])  # as status.agent_state
    by_state = {
        "in sync": in_sync,
        "stale": len(counted.applied) - in_sync,
        "failed": counted.failed,
        "tampered": counted.tampered,
    }
    offline = counted.offline
    m = rt.metrics
    lines = [
        *_family(
            "microseg_agents",
            "gauge",
            "Agents by state.",
            [(f'{{state="{s}"}}', by_state.get(s, 0)) for s in status.STATES if s != "no agent"],
        ),
        *_family("microseg_agents_offline", "gauge", "Agents marked offline.", [("", offline)]),
        *_family("microseg_provisions_total", "counter", "Policy versions provisioned.", [("", provisions)]),
        *_family(
            "microseg_flow_records_ingested_total",
            "counter",
            "Flow records stored by this process.",
            [("", m.flow_records)],
        ),
        *_family(
            "microseg_flow_batches_ingested_total",
            "counter",
            "Flow batches stored by this process.",
            [("", m.flow_batches)],
        ),
        *_family(
            "microseg_flow_ingest_records_per_second",
            "gauge",
            "Flow records per second, last minute.",
            [("", round(m.ingest_rate(), 3))],
        ),
        *_family(
            "microseg_compile_seconds",
            "summary",
            "Time to compile the estate into rulesets.",
            [("_sum", round(m.compile_seconds, 6)), ("_count", m.compiles)],
        ),
        *_family("microseg_feed_waiting", "gauge", "Long-polls waiting here.", [("", m.feed_waiting)]),
        *_family(
            "microseg_compile_last_seconds",
            "gauge",
            "The last compile's duration.",
            [("", round(m.last_compile_seconds, 6))],
        ),
        *_gc_families(),
    ]
    return "\n".join(lines) + "\n"


def _gc_families() -> list[str]:
    """What full collections cost this process: each holds every request and the feed (see
    `server/collector`). Counted from the serving process's start; zero elsewhere."""
    pauses = collector.PAUSES
    return [
        *_family(
            "microseg_gc_full_collection_seconds",
            "summary",
            "Full collections of Python's cyclic garbage collector and the seconds they held the process.",
            [("_sum", round(pauses.seconds, 6)), ("_count", pauses.count)],
        ),
        *_family(
            "microseg_gc_full_collection_longest_seconds",
            "gauge",
            "The longest full collection.",
            [("", round(pauses.longest, 6))],
        ),
        *_family(
            "microseg_gc_frozen_objects", "gauge", "Objects no collection walks.", [("", collector.frozen())]
        ),
    ]
