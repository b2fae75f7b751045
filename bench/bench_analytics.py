"""Flow analytics benchmarks over stored flow summaries; run by `bench/run`, judged by bench/report.py.

Targets (issue #6 §7, #17; defined in bench/targets.py): 1,000,000 stored flow records with
100,000 distinct flows over 5,000 workloads: dependency map, simulation and recommendation, each
timed from reading the rows out of the database, on SQLite and on PostgreSQL.

Run: .venv/bin/python bench/bench_analytics.py [--quick] [--records N] [--flows N] [--repeat N]
[--backends ...] [--output FILE]
It builds a synthetic estate (`synthetic.generate`, seed 0), generates agent flow records between
its workloads (and IP-list / external peers), folds them into summaries with `summaries.add_batch`
(one transaction per agent batch, as the server does), then times each analysis as the server
answers it: `summaries.records` (the window's rows folded across hours by the database) and the analysis
on them, best of `--repeat` runs (default 3); `summaries.records` alone is reported too. The active
engine is built once and shared, as the server's is (its verdict caches are warm after the first
run); each run gets a fresh draft engine, as each server request does (cold caches). Each backend
runs in a forked child so that its peak RSS is its own.
It writes the raw figures (default bench/results/adhoc/analytics.json); `bench/run` is what writes
bench/results/ and BENCHMARKS.md. PostgreSQL is the test database (127.0.0.1:5432, `test`), in a
schema of its own that is dropped afterwards.

What it deliberately does not do: go through HTTP (bench_server.py measures ingest over HTTP) or
time building the engines an analysis is given (recommend builds one more, with its proposal: that
one is timed).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_server import backend  # the same fresh SQLite file or PostgreSQL schema per run
from microseg.analytics import collecting, depmap, recommend, simulate
from microseg.engine import engine as engine_mod
from microseg.model import addresses, services, verdicts
from microseg.policyfile import synthetic
from microseg.store import database, migrate, summaries

RESULTS = Path(__file__).parent / "results" / "adhoc" / "analytics.json"
"""Where a run of this script alone writes; `bench/run` gives --output (see bench/runner.py)."""
HOURS = 24
START = 1_790_000_000.0 // 3600 * 3600
"""First hour bucket (a fixed time, so runs are comparable)."""
BATCH = 1000
"""Most records in one agent batch."""
ROLE_PORTS: dict[str, tuple[tuple[int, str, str | None], ...]] = {
    "lb": ((443, "tcp", "haproxy"), (80, "tcp", "nginx")),
    "web": ((80, "tcp", "nginx"), (8080, "tcp", "nginx")),
    "app": ((8443, "tcp", "java"), (9001, "tcp", "java")),
    "db": ((5432, "tcp", "postgres"), (3306, "tcp", "mysqld")),
    "cache": ((6379, "tcp", "redis-server"),),
    "queue": ((5672, "tcp", "beam.smp"),),
    "worker": ((9100, "tcp", "node_exporter"), (9002, "tcp", "python3")),
    "batch": ((22, "tcp", "sshd"), (514, "udp", "rsyslogd")),
}
"""What a destination of each role serves (the synthetic estate's rules name these ports)."""
STRAY = ((22, "tcp", "sshd"), (53, "udp", "systemd-resolved"), (7001, "tcp", "java"), (31337, "tcp", None))
CLIENTS = ("curl", "java", "python3", "nginx", None)


@dataclass(frozen=True)
class Flow:
    """One distinct (src, dst, port, process) flow and who reports it."""

    src: str
    dst: str
    dport: int
    proto: str
    process: str | None
    client: str | None
    reporters: tuple[tuple[str, str], ...]
    """(workload, direction) of each managed end."""
    verdict: str
    rule: str | None


def estate_and_engine(workloads: int) -> tuple[Any, engine_mod.PolicyEngine, float]:
    """The synthetic estate (label sets and rules scaled as in bench_server.py) and its engine."""
    est = synthetic.generate(workloads, max(1, workloads // 10), workloads // 5, seed=0)
    start = time.perf_counter()
    eng = engine_mod.PolicyEngine(est)
    return est, eng, time.perf_counter() - start


def _pick_flow(rng: random.Random, managed: list[Any], others: list[Any]) -> tuple[str, Any, str, Any]:
    """(src address, src workload or None, dst address, dst workload or None)."""
    roll = rng.random()
    src = rng.choice(managed)
    if roll < 0.80:
        dst = rng.choice(managed)
        return _addr(src), src, _addr(dst), dst
    if roll < 0.85 and others:
        dst = rng.choice(others)
        return _addr(src), src, _addr(dst), None
    if roll < 0.92:  # out to the internet
        return _addr(src), src, f"52.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", None
    dst = rng.choice(managed)  # in from corp users, monitoring, or outside
    peer = rng.choice(("10.200.{}.{}", "10.203.0.{1}", "198.51.100.{1}")).format(
        rng.randrange(255), rng.randrange(1, 255)
    )
    return peer, None, _addr(dst), dst


def _addr(workload: Any) -> str:
    return str(workload.addresses[0].network_address)


def make_flows(
    est: Any, eng: engine_mod.PolicyEngine, count: int, allowed_share: float = 0.6, seed: int = 0
) -> list[Flow]:
    """`count` distinct flows, `allowed_share` of them allowed by the active policy (random pairs
    mostly are not); each managed end reports a flow; the recorded verdict is the active one."""
    rng = random.Random(seed)
    managed = [w for w in est.workloads if w.managed]
    others = [w for w in est.workloads if not w.managed]
    want = {True: round(count * allowed_share), False: count - round(count * allowed_share)}
    found: dict[tuple[str, str, int, str], Flow] = {}
    for _ in range(count * 200):
        if len(found) == count:
            break
        flow = _candidate(rng, eng, managed, others)
        key = (flow.src, flow.dst, flow.dport, flow.proto)
        allowed = flow.verdict == verdicts.Outcome.ALLOWED.value
        if key not in found and want[allowed] > 0:
            want[allowed] -= 1
            found[key] = flow
    return list(found.values())


def _candidate(
    rng: random.Random, eng: engine_mod.PolicyEngine, managed: list[Any], others: list[Any]
) -> Flow:
    src, src_w, dst, dst_w = _pick_flow(rng, managed, others)
    role = dst_w.labels.get("role") if dst_w is not None else None
    served = ROLE_PORTS.get(role or "", ((443, "tcp", None),))
    dport, proto, process = rng.choice(served) if rng.random() < 0.85 else rng.choice(STRAY)
    client = rng.choice(CLIENTS)
    reporters = (((src_w.name, "out"),) if src_w else ()) + (((dst_w.name, "in"),) if dst_w else ())
    v = eng.evaluate(
        verdicts.Endpoint(addresses.address(src)),
        verdicts.Endpoint(addresses.address(dst)),
        dport,
        services.Protocol(proto),
        process=process,
        client_process=client,
    )
    return Flow(src, dst, dport, proto, process, client, reporters, v.outcome.value, v.rule)


def batches(flows: list[Flow], records: int, seed: int = 1) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(reporter, records) per agent batch: each agent's records of the day, hour by hour, at most
    BATCH per batch; `records` in all, spread evenly over flow ends and hours."""
    rng = random.Random(seed)
    ends: dict[str, list[tuple[Flow, str]]] = {}
    for f in flows:
        for name, direction in f.reporters:
            ends.setdefault(name, []).append((f, direction))
    total_ends = sum(len(v) for v in ends.values())
    per_end, extra = divmod(records, total_ends)
    index = 0
    for name in sorted(ends):
        pending: list[dict[str, Any]] = []
        for f, direction in ends[name]:
            n = per_end + (1 if index < extra else 0)
            index += 1
            for k in range(n):
                first = START + (k * HOURS // n) * 3600 + rng.random() * 3000
                pending.append(_record(rng, f, direction, first))
                if len(pending) == BATCH:
                    yield name, pending
                    pending = []
        if pending:
            yield name, pending


def _record(rng: random.Random, f: Flow, direction: str, first: float) -> dict[str, Any]:
    connections = rng.randrange(1, 20)
    return {
        "direction": direction, "src": f.src, "dst": f.dst, "dport": f.dport, "proto": f.proto,
        "process": f.process if direction == "in" else f.client, "bytes": connections * rng.randrange(10**5),
        "packets": connections * rng.randrange(1, 100), "connections": connections, "first_seen": first,
        "last_seen": first + rng.random() * 600, "verdict": f.verdict, "rule": f.rule,
    }  # fmt: skip


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best of `repeat` runs (the machine is shared: the best run is the least disturbed one)."""
    return timed_fresh(lambda: None, lambda _: fn(), repeat)


def timed_fresh(setup: Callable[[], Any], fn: Callable[[Any], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best of `repeat` runs of `fn(setup())`, each on a fresh (untimed) setup."""
    best, result = float("inf"), None
    for _ in range(repeat):
        fresh = setup()
        gc.collect()
        start = time.perf_counter()
        result = fn(fresh)
        best = min(best, time.perf_counter() - start)
    return round(best, 3), result


def draft_of(est: Any, flows: list[Flow], drop: int) -> tuple[Any, list[str]]:
    """The estate without the `drop` allow rules that the most flows were allowed by."""
    used: dict[str, int] = {}
    for f in flows:
        if f.rule and f.verdict == "allowed":
            used[f.rule] = used.get(f.rule, 0) + 1
    allow = {f"{r.tier}/{r.name}" for r in est.rules if r.action.value == "allow"}  # verdicts say tier/name
    dropped = [name for name, _ in sorted(used.items(), key=lambda kv: -kv[1]) if name in allow][:drop]
    return est.with_rules(tuple(r for r in est.rules if f"{r.tier}/{r.name}" not in dropped)), dropped


def run_backend(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything for one backend, in this (forked) process."""
    est, eng, compile_s = estate_and_engine(args.workloads)
    flows = make_flows(est, eng, args.flows)
    draft_est, dropped = draft_of(est, flows, 5)
    n = args.repeat
    out: dict[str, Any] = {
        "repeat": n, "compile_seconds": round(compile_s, 2), "flows": len(flows), "dropped": dropped,
        "flow_verdicts": {o.value: sum(f.verdict == o.value for f in flows) for o in verdicts.Outcome},
    }  # fmt: skip
    with backend(name, workdir) as url:
        db = database.Database(url)
        migrate.upgrade(db)
        out["rows"], out["ingest"] = ingest(db, flows, args.records)
        out["rss_after_ingest_mb"] = rss_mb()
        print(f"  {name}: {out['rows']:,} rows, ingest {out['ingest']}", flush=True)
        out.update(analyses(db, est, eng, draft_est, n))
        db.dispose()
    out["rss_peak_mb"] = rss_mb()
    print(
        f"  {name}: query {out['query']} s, map {out['map']} s, simulate {out['simulate']} s, "
        f"recommend {out['recommend']} s (each reading its rows)",
        flush=True,
    )
    return out


def ingest(db: database.Database, flows: list[Flow], records: int) -> tuple[int, dict[str, Any]]:
    """Fold the records into summaries, one transaction per agent batch; (rows, ingest figures)."""
    count, sizes, ingest_s = 0, 0, 0.0
    for reporter, batch in batches(flows, records):
        start = time.perf_counter()
        with db.write() as conn:
            summaries.add_batch(db, conn, reporter, batch)
        ingest_s += time.perf_counter() - start  # record generation is not counted
        count += 1
        sizes += len(batch)
    with db.read() as conn:
        rows = summaries.counts(conn)
    return rows, {
        "records": sizes, "batches": count, "mean_batch": round(sizes / count),
        "seconds": round(ingest_s, 2), "records_per_second": round(sizes / ingest_s),
    }  # fmt: skip


def analyses(
    db: database.Database, est: Any, eng: engine_mod.PolicyEngine, draft_est: Any, n: int
) -> dict[str, Any]:
    """Each analysis timed as the server answers it: read the window's rows from the database
    (`summaries.records`, as routes_analytics does), then analyse them; best of `n`."""
    out: dict[str, Any] = {}

    @collecting.while_paused  # as routes_analytics reads
    def read() -> list[Any]:
        with db.read() as conn:
            return summaries.records(conn)

    out["query"], rows = timed(read, n)
    out["rss_after_query_mb"] = rss_mb()
    out["query_rows"] = len(rows)  # the window folded across hours: what crosses into Python
    at = [summaries.RECORD_COLUMNS.index(k) for k in ("src", "dst", "dport", "proto")]
    out["stored_distinct_flows"] = len({tuple(r[i] for i in at) for r in rows})
    del rows

    # As in the server: the active engine lives as long as its version (its verdict caches stay
    # warm after the first request), a draft engine is built for each request (cold caches).
    def drafted() -> engine_mod.PolicyEngine:
        return engine_mod.PolicyEngine(draft_est)

    def fresh() -> engine_mod.PolicyEngine:
        return engine_mod.PolicyEngine(est)

    group_by, within = ("app", "role"), ("env",)
    out["map"], graph = timed_fresh(drafted, lambda d: depmap.build(read(), eng, d, group_by, within), n)
    out["map_size"] = {"nodes": len(graph.nodes), "edges": len(graph.edges)}
    out["simulate"], sim = timed_fresh(drafted, lambda d: simulate.simulate(read(), eng, d), n)
    out["simulate_groups"] = len(sim.groups)
    # recommend reads the draft's engine (here: an unchanged draft), built for the request
    keys = ("env", "app", "role")
    out["recommend"], rec = timed_fresh(fresh, lambda e: recommend.recommend(read(), e, keys), n)
    out["recommend_rules"] = len(rec.rules)
    return out


def _child(name: str, args: argparse.Namespace, workdir: Path, queue: Any) -> None:
    try:
        queue.put(run_backend(name, args, workdir))
    except BaseException as failed:
        queue.put({"error": repr(failed)})
        raise


QUICK = {"workloads": 500, "records": 30_000, "flows": 5_000, "repeat": 1}
"""Sizes of `--quick` (a smoke run: its figures are never judged against the targets)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--workloads", type=int, default=5000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=100_000, help="distinct (src, dst, port, proto) flows")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each analysis; the best counts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {
        "workloads": args.workloads, "records": args.records, "flows": args.flows, "hours": HOURS,
        "repeat": args.repeat, "runs": {},
    }  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="microseg-bench-") as tmp:
        for name in args.backends.split(","):
            print(
                f"{name}: {args.records:,} records, {args.flows:,} flows, {args.workloads:,} workloads",
                flush=True,
            )
            queue = ctx.Queue()
            child = ctx.Process(target=_child, args=(name, args, Path(tmp), queue))
            child.start()
            results["runs"][name] = queue.get()
            child.join()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["runs"], indent=2))
    if any("error" in run for run in results["runs"].values()):
        sys.exit("a backend failed: see its error above")


if __name__ == "__main__":
    sys.exit(main())
