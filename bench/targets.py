"""Every benchmark target, defined once: what each table row of BENCHMARKS.md shows, where its raw
figure is in a bench's results, the target it is judged against and the inputs the target is
defined on.

Read by bench/report.py (which judges and renders) and bench/runner.py (which records each run's
inputs). The targets come from the issues: #2 (engine), #3 (Kubernetes), #4 (control plane),
#5 (host agent), #6 (flow analytics) and #17 (which restated some and added the rest).

A target is only judged on the inputs it was set for (`Needs`): a run on smaller inputs shows
its figure as "not judged", never "met". Targets issue #17 set that no bench measures yet are rows
whose figure is never present ("not measured"), so that no table implies they are met.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Getter = Callable[[dict[str, Any]], Any]
"""Reads one value out of a bench's raw figures (None when absent)."""

BACKENDS = ("sqlite", "postgres")
BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def path(dotted: str) -> Getter:
    """A getter for `a.b.c` in nested dicts (None when any step is missing)."""

    def get(figures: dict[str, Any]) -> Any:
        value: Any = figures
        for step in dotted.split("."):
            if not isinstance(value, dict) or step not in value:
                return None
            value = value[step]
        return value

    get.__doc__ = dotted
    return get


def agent_ratio(top: str, bottom: str, field: str = "paired") -> Getter:
    """The bench_agent ratio `top` / `bottom` (the paired median of rounds unless `field` says)."""

    def get(figures: dict[str, Any]) -> Any:
        found = [r for r in figures.get("ratios", []) if r["top"] == top and r["bottom"] == bottom]
        return found[0].get(field) if found else None

    get.__doc__ = f"ratios[{top} / {bottom}].{field}"
    return get


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Needs:
    """An input a target is defined on: `figure` at least `at_least` (or equal to `equals`)."""

    what: str
    """How the row's note names it ("1,000,000 verdicts")."""
    figure: Getter
    at_least: float | None = None
    equals: object = None

    def holds(self, figures: dict[str, Any]) -> bool:
        """Whether these figures were measured on the input the target needs."""
        value = self.figure(figures)
        if value is None:
            return False
        if self.equals is not None:
            return bool(value == self.equals)
        return self.at_least is None or float(value) >= self.at_least


@dataclass(frozen=True)
class Target:
    """`figure op limit`, from an issue, on the inputs in `needs`."""

    op: str
    limit: float
    issue: str
    needs: tuple[Needs, ...] = ()

    def met(self, value: float) -> bool:
        """Whether `value` meets the target."""
        return OPERATORS[self.op](value, self.limit)


@dataclass(frozen=True)
class Row:
    """One line of a generated table."""

    what: str
    figure: Getter
    unit: str = ""
    spec: str = ",.2f"
    """Format of the figure (after `scale`)."""
    target: Target | None = None
    scale: float = 1.0
    """Multiplies the raw figure before it is shown and judged (kB -> MB, ratio -> %)."""

    def value(self, figures: dict[str, Any]) -> float | None:
        """The figure as shown and judged, or None when the results do not hold it."""
        raw = self.figure(figures)
        return None if raw is None else float(raw) * self.scale


@dataclass(frozen=True)
class Input:
    """An input size shown above a table and recorded in the results file."""

    what: str
    figure: Getter


@dataclass(frozen=True)
class Section:
    """One generated block of BENCHMARKS.md: the results of one bench."""

    bench: str
    inputs: tuple[Input, ...]
    rows: tuple[Row, ...]


def per_backend(rows: Callable[[str, str], list[Row]]) -> tuple[Row, ...]:
    """`rows(backend, label)` for each backend, in order."""
    return tuple(row for b in BACKENDS for row in rows(b, BACKEND_NAMES[b]))


def _at_least(what: str, dotted: str, n: float) -> Needs:
    return Needs(what, path(dotted), at_least=n)


# -- engine (issue #2, verdicts restated and the large compile added by #17) ---------------------

_ESTATE = (
    _at_least("10,000 workloads", "workloads", 10_000),
    _at_least("500 label sets", "label_sets", 500),
    _at_least("2,000 rules", "rules", 2_000),
)
_VERDICTS = (
    _at_least("1,000,000 verdicts", "verdicts", 1_000_000),
    _at_least("500,000 distinct flows", "verdicts_distinct_flows", 500_000),
    _at_least("time-windowed rules present", "verdicts_timed_rules", 1),
)
_NFT = (
    _at_least("5,000 peers", "nft_peers", 5_000),
    _at_least("5,000 set elements rendered (nothing merged)", "nft_rendered_elements", 5_000),
    _at_least("5,000 set elements in the kernel", "nft_loaded_elements", 5_000),
)
_SCALE = (
    _at_least("50,000 workloads", "scale_workloads", 50_000),
    _at_least("5,000 rules", "scale_rules", 5_000),
)

ENGINE = Section(
    "engine",
    inputs=(
        Input("workloads", path("workloads")),
        Input("label sets", path("label_sets")),
        Input("rules", path("rules")),
        Input("identities", path("identities")),
        Input("distinct selectors", path("selectors")),
        Input("relabels timed", path("relabel_repeats")),
        Input("verdicts", path("verdicts")),
        Input("distinct (src, dst, port) flows among them", path("verdicts_distinct_flows")),
        Input("time-windowed rules", path("verdicts_timed_rules")),
        Input("nft peers", path("nft_peers")),
        Input("set elements rendered", path("nft_rendered_elements")),
        Input("set elements in the kernel", path("nft_loaded_elements")),
        Input("large compile: workloads", path("scale_workloads")),
        Input("large compile: label sets", path("scale_label_sets")),
        Input("large compile: rules", path("scale_rules")),
    ),
    rows=(
        Row("full compile (rulesets + set members), median of 3", path("full_compile_s"), "s",
            target=Target("<=", 5, "#2", _ESTATE)),
        Row("materialise + hash every document", path("all_documents_s"), "s"),
        Row("relabel one workload -> every affected document rebuilt (median)", path("relabel_ms_median"),
            "ms", target=Target("<=", 20, "#2", _ESTATE)),
        Row("... of which the engine's delta (median)", path("relabel_engine_only_ms_median"), "ms"),
        Row("... documents rebuilt per relabel (median)", path("relabel_documents_rebuilt_median"), "",
            spec=",.0f"),
        Row("relabel into a new identity, documents rebuilt (median)",
            path("relabel_new_identity_ms_median"), "ms"),
        Row("address change -> set-member delta (median)", path("readdress_ms_median"), "ms",
            target=Target("<=", 5, "#2", _ESTATE)),
        Row("verdicts, time-windowed rules present, fresh engine", path("verdicts_s"), "s",
            target=Target("<=", 3, "#2, #17", _ESTATE + _VERDICTS)),
        Row("one verdict computed cold", path("verdicts_cold_per_distinct_us"), "us"),
        Row("nft -f, peers that cannot merge (in an ms- namespace), median of 5", path("nft_load_ms"), "ms",
            target=Target("<=", 100, "#2", _NFT)),
        Row("... nsenter + process start alone", path("nft_spawn_floor_ms"), "ms"),
        Row("full compile of the large estate", path("scale_compile_s"), "s",
            target=Target("<=", 10, "#17", _SCALE)),
        Row("... peak RSS of that process", path("scale_peak_rss_mb"), "MB", spec=",.0f",
            target=Target("<=", 2048, "#17", _SCALE)),
    ),
)  # fmt: skip


# -- control plane (issue #4; ingest restated by #17, which adds the 10,000-agent targets) -------


def _server_rows(b: str, label: str) -> list[Row]:
    run = f"runs.{b}"
    ingest_needs = (
        _at_least("100,000 records", f"{run}.ingest.records", 100_000),
        # #17: "summaries + events + invariant checks included": a policy with invariants in force
        _at_least("invariants in force", f"{run}.ingest.invariants", 1),
    )
    fan_needs = (_at_least("1,000 agents", f"{run}.fan_out.agents", 1_000),)
    return [
        Row(f"{label}: flow ingest, batches of 1,000 records, over HTTP",
            path(f"{run}.ingest.records_per_second"), "records/s", spec=",.0f",
            target=Target(">=", 50_000, "#4, #17", ingest_needs)),
        Row(f"{label}: one batch, p50", path(f"{run}.ingest.batch_p50_ms"), "ms", spec=",.1f"),
        Row(f"{label}: one batch, p99", path(f"{run}.ingest.batch_p99_ms"), "ms", spec=",.1f"),
        Row(f"{label}: one provision -> the last long-polling agent has its new ruleset",
            path(f"{run}.fan_out.seconds_to_last_agent"), "s", target=Target("<=", 2, "#4", fan_needs)),
    ]  # fmt: skip


def _fleet_rows(b: str, label: str) -> list[Row]:
    """Issue #17's one-replica targets at 10,000 agents, measured by bench/bench_fleet.py through
    the public API only (`--fleet N` of bench_server.py); the sustained enrollment rate is the
    slowest tenth's, so a rate that falls as the estate grows is what is judged."""
    run = f"runs.{b}.fleet"
    needs = (_at_least("10,000 agents", f"{run}.agents", 10_000),)
    return [
        Row(f"{label}: enroll agents, sustained rate (slowest tenth)", path(f"{run}.enroll_per_s"), "per s",
            spec=",.0f", target=Target(">=", 100, "#17", needs)),
        Row(f"{label}: ... enrollment errors (any non-2xx)", path(f"{run}.enroll_errors"), "", spec=",.0f",
            target=Target("<=", 0, "#17", needs)),
        Row(f"{label}: ... first tenth", path(f"{run}.enroll_first_tenth_per_s"), "per s",
            spec=",.0f"),
        Row(f"{label}: ... last tenth", path(f"{run}.enroll_last_tenth_per_s"), "per s", spec=",.0f"),
        Row(f"{label}: first fetch of every document (all agents)", path(f"{run}.first_fetch_mb"), "MB"),
        Row(f"{label}: provision -> the last agent has its new ruleset", path(f"{run}.seconds_to_last_agent"),
            "s", target=Target("<=", 3, "#17", needs)),
        Row(f"{label}: ... the median agent", path(f"{run}.seconds_to_median_agent"), "s"),
        Row(f"{label}: ... full garbage collections of the server meanwhile",
            path(f"{run}.fan_out_gc_full_collections"), "", spec=",.0f"),
        Row(f"{label}: ... the seconds they stopped it", path(f"{run}.fan_out_gc_full_collection_s"), "s"),
        Row(f"{label}: bytes sent for a one-rule change every document holds", path(f"{run}.bytes_sent_mb"),
            "MB", target=Target("<=", 50, "#17", needs)),
        Row(f"{label}: ... documents and deltas hash-checked by verifying agents", path(f"{run}.verified"),
            "", spec=",.0f"),
        Row(f"{label}: relabel one workload -> every affected agent updated", path(f"{run}.relabel_s"), "s",
            target=Target("<=", 1, "#17", needs)),
        Row(f"{label}: ... agents whose document the relabel changed", path(f"{run}.relabel_agents"), "",
            spec=",.0f"),
        Row(f"{label}: API p99 during the fan-out", path(f"{run}.api_p99_ms"), "ms",
            target=Target("<=", 200, "#17", needs)),
        Row(f"{label}: ... p50", path(f"{run}.api_p50_ms"), "ms"),
        Row(f"{label}: server RSS with every agent parked", path(f"{run}.rss_mb"), "MB", spec=",.0f",
            target=Target("<=", 1536, "#17", needs)),
        Row(f"{label}: ... its peak so far (VmHWM)", path(f"{run}.rss_hwm_mb"), "MB", spec=",.0f"),
    ]  # fmt: skip


SERVER = Section(
    "server",
    inputs=(
        Input("records per backend (batches x 1,000)", lambda f: (f.get("batches") or 0) * 1000 or None),
        Input("agents sending at once", path("senders")),
        Input("long-polling agents", path("agents")),
        Input("fleet agents (enrolled over HTTP)", path("fleet_agents")),
        Input("fleet label rules", path("fleet_rules")),
    ),
    rows=per_backend(_server_rows) + per_backend(_fleet_rows),
)


# -- flow analytics (issue #6 §7, inputs restated by #17) ----------------------------------------


def _analytics_rows(b: str, label: str) -> list[Row]:
    run = f"runs.{b}"
    needs = (
        _at_least("1,000,000 records", f"{run}.ingest.records", 1_000_000),
        _at_least("100,000 distinct flows stored", f"{run}.stored_distinct_flows", 100_000),
    )
    return [
        Row(f"{label}: summary rows after folding", path(f"{run}.rows"), "", spec=",.0f"),
        Row(f"{label}: distinct flows read back", path(f"{run}.stored_distinct_flows"), "", spec=",.0f"),
        Row(f"{label}: ingest (`add_batch`)", path(f"{run}.ingest.records_per_second"), "records/s",
            spec=",.0f"),
        Row(f"{label}: `summaries.records`, the whole window folded across hours", path(f"{run}.query"), "s"),
        Row(f"{label}: ... rows it gives (one per key without the hour)", path(f"{run}.query_rows"), "",
            spec=",.0f"),
        Row(f"{label}: map (`app,role` within `env`), reading rows included", path(f"{run}.map"), "s",
            target=Target("<=", 3, "#6, #17", needs)),
        Row(f"{label}: simulation (draft without 5 rules), reading rows included", path(f"{run}.simulate"),
            "s", target=Target("<=", 5, "#6, #17", needs)),
        Row(f"{label}: recommendation (`env,app,role`), reading rows included", path(f"{run}.recommend"),
            "s", target=Target("<=", 10, "#6, #17", needs)),
        Row(f"{label}: peak RSS", path(f"{run}.rss_peak_mb"), "MB", spec=",.0f"),
    ]  # fmt: skip


ANALYTICS = Section(
    "analytics",
    inputs=(
        Input("workloads", path("workloads")),
        Input("records", path("records")),
        Input("distinct (src, dst, port, proto) flows", path("flows")),
        Input("hours", path("hours")),
        Input("runs per analysis (best counts)", path("repeat")),
    ),
    rows=per_backend(_analytics_rows),
)


# -- Kubernetes NetworkPolicy analysis (issue #3) ---------------------------------------------

_CLUSTER = (
    _at_least("2,000 pods", "pods", 2_000),
    _at_least("50 namespaces", "namespaces", 50),
    _at_least("500 policies", "policies", 500),
)

K8S = Section(
    "k8s",
    inputs=(
        Input("pods", path("pods")),
        Input("namespaces", path("namespaces")),
        Input("policies", path("policies")),
        Input("ports probed", path("ports")),
        Input("verdicts", path("verdicts")),
        Input("manifest bytes", path("manifest_bytes")),
    ),
    rows=(
        Row("read and check the manifests", path("parse_s"), "s"),
        Row("compute every verdict (bitmasks per destination and port)", path("compute_s"), "s"),
        Row("read out every verdict one by one", path("read_out_s"), "s"),
        Row("analysis: the three together", path("analysis_s"), "s", target=Target("<=", 30, "#3", _CLUSTER)),
        Row("`-o json`: every connection with its reason, streamed", path("json_s"), "s"),
    ),
)


# -- host agent data plane (issue #5 §8, restated by #17) -------------------------------------

_ROUNDS = (
    _at_least("5,000 peers", "peers", 5_000),
    _at_least("5 rounds", "rows.agent.rounds", 5),
)
_DAEMON = (
    Needs("the agent daemon observing", path("footprint.observer"), equals="agent"),
    _at_least("20 s paced", "footprint.paced_secs", 20),
)

AGENT = Section(
    "agent",
    inputs=(
        Input("peer addresses in the policy", path("peers")),
        Input("rounds", path("rows.agent.rounds")),
    ),
    rows=(
        Row("no firewall: connections/s (median of rounds)", path("rows.none.cps"), "per s", spec=",.0f"),
        Row("agent's ruleset: connections/s (median of rounds)", path("rows.agent.cps"), "per s",
            spec=",.0f"),
        Row("agent / conntrack-only (paired)", agent_ratio("agent", "conntrack-only"), "", spec=".3f",
            target=Target(">=", 0.95, "#5", _ROUNDS)),
        Row("agent / iptables-linear (paired)", agent_ratio("agent", "iptables-linear"), "", spec=".3f"),
        Row("none / iptables-linear (paired): the ceiling of the ratio above",
            agent_ratio("none", "iptables-linear"), "", spec=".3f"),
        Row("agent / iptables-linear as a share of that ceiling (= agent / none, paired)",
            agent_ratio("agent", "none"), "", spec=".3f", target=Target(">=", 0.9, "#17", _ROUNDS)),
        Row("none-aa / none (paired): the A/A control", agent_ratio("none-aa", "none"), "", spec=".3f"),
        Row("agent observing / not observing, same core (paired)",
            agent_ratio("agent+observe", "observer-off"), "", spec=".3f",
            target=Target(">=", 0.9, "#5, #17", _ROUNDS + _DAEMON[:1])),
        Row("agent observing on the other core / not observing (paired)",
            agent_ratio("agent+observe@cpu1", "observer-off"), "", spec=".3f"),
        Row("agent CPU at a paced 500 new connections/s", path("footprint.cpu_percent"), "% of a core",
            target=Target("<", 5, "#5", _DAEMON)),
        Row("agent RSS, peak (VmHWM) at the end of the paced storm", path("footprint.VmHWM"), "MB",
            spec=",.1f", scale=1 / 1024, target=Target("<", 80, "#5, #17", _DAEMON)),
        Row("agent RSS, peak (VmHWM) after the provisions as well", path("provision.agent_memory_kb.VmHWM"),
            "MB", spec=",.1f", scale=1 / 1024),
        Row("provision -> enforced, p50", path("provision.p50_ms"), "ms", spec=",.0f"),
        Row("provision -> enforced, p99", path("provision.p99_ms"), "ms", spec=",.0f"),
    ),
)  # fmt: skip

SECTIONS: dict[str, Section] = {s.bench: s for s in (ENGINE, SERVER, ANALYTICS, K8S, AGENT)}
"""By bench name: the results file bench/results/<name>.json and the block generated:<name>."""
