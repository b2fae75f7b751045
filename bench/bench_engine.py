"""Engine benchmarks on a generated estate; figures go to BENCHMARKS.md (see `--help`).

Targets (issue #2), on 10,000 workloads, 500 distinct label sets and 2,000 rules:
full compile <= 5 s; one workload relabelled -> updated rulesets <= 20 ms; one address change ->
set-member delta <= 5 ms; 1,000,000 verdicts <= 3 s; a ruleset with 5,000 peer addresses loads
with `nft -f` in <= 100 ms inside a network namespace (root only; skipped otherwise).

Run: .venv/bin/python bench/bench_engine.py [--workloads N --label-sets N --rules N --verdicts N]
It prints a Markdown table and writes bench/results/engine.json. Timings are wall-clock medians
of several repetitions on whatever machine runs it; nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import collections
import gc
import ipaddress
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microseg import settings
from microseg.engine import engine
from microseg.model import addresses, rules, ruleset, services, verdicts, workloads
from microseg.policyfile import synthetic
from microseg.render import nftables

RESULTS = Path(__file__).parent / "results" / "engine.json"


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Median wall time in seconds over `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_compile(est: Any) -> tuple[float, float, engine.PolicyEngine]:
    """Full compile (rule book, index, identities, rulesets, set members), then all documents."""
    compile_s, eng = timed(lambda: engine.PolicyEngine(est), repeat=3)
    assert isinstance(eng, engine.PolicyEngine)
    docs_s, _ = timed(eng.documents)
    return compile_s, docs_s, eng


def bench_relabel(eng: engine.PolicyEngine, rnd: random.Random, n: int = 50) -> dict[str, float]:
    """Move a workload to another existing label set (and to a brand-new one)."""
    names = eng.workload_names()
    label_sets = sorted({eng.workload(x).labels for x in names[:2000]})
    times, new_times, touched = [], [], []
    for i in range(n):
        w = eng.workload(rnd.choice(names))
        target = rnd.choice(label_sets)
        t, delta = timed(lambda w=w, target=target: eng.upsert_workload(w.with_labels(target)))
        times.append(t)
        touched.append(len(delta.workloads))  # type: ignore[attr-defined]
        fresh = w.labels.merged({"role": f"bench-{i}"})  # a role no label set has: a new identity
        t2, _ = timed(lambda w=w, fresh=fresh: eng.upsert_workload(w.with_labels(fresh)))
        new_times.append(t2)
    return {
        "relabel_ms_median": statistics.median(times) * 1000,
        "relabel_ms_max": max(times) * 1000,
        "relabel_new_identity_ms_median": statistics.median(new_times) * 1000,
        "relabel_documents_touched_median": statistics.median(touched),
    }


def bench_readdress(eng: engine.PolicyEngine, rnd: random.Random, n: int = 200) -> dict[str, float]:
    """Give a workload a fresh address: only set members move."""
    names = [x for x in eng.workload_names() if eng.workload(x).managed]
    base = int(ipaddress.ip_address("10.200.0.1"))
    times, sizes = [], []
    for i in range(n):
        w = eng.workload(rnd.choice(names))
        new_addr = (addresses.network(str(ipaddress.ip_address(base + i))),)
        t, delta = timed(lambda w=w, new_addr=new_addr: eng.upsert_workload(w.with_addresses(new_addr)))
        times.append(t)
        sizes.append(len(delta.sets))  # type: ignore[attr-defined]
    return {
        "readdress_ms_median": statistics.median(times) * 1000,
        "readdress_ms_max": max(times) * 1000,
        "readdress_sets_changed_median": statistics.median(sizes),
    }


def bench_verdicts(eng: engine.PolicyEngine, rnd: random.Random, count: int) -> dict[str, float]:
    """`count` verdicts, as a flow-history replay sees them: 100,000 distinct flows (random workload
    pairs and ports the rules name), each seen count/100,000 times in random order. Also the
    cold figure: the first pass over distinct flows, where every verdict is computed."""
    names = eng.workload_names()
    endpoints = [eng.endpoint(x) for x in names]
    probes = sorted(
        {(s.protocol, r.first) for br in eng.book.rules for svc in br.rule.services for s in svc.specs
         for r in s.ports}
    )[:64] or [(services.Protocol.TCP, 80)]  # fmt: skip
    distinct = min(count, 100_000)
    pool = [(rnd.choice(endpoints), rnd.choice(endpoints), *rnd.choice(probes)) for _ in range(distinct)]
    stream = [pool[rnd.randrange(distinct)] for _ in range(count)]
    evaluate = eng.evaluate

    def run(flows: list[tuple[Any, Any, Any, Any]]) -> list[verdicts.Verdict]:
        return [evaluate(src, dst, port, proto) for src, dst, proto, port in flows]

    cold, _ = timed(lambda: run(pool))
    seconds, answers = timed(lambda: run(stream))
    outcomes = collections.Counter(v.outcome.value for v in answers)  # type: ignore[attr-defined]
    return {
        "verdicts": count,
        "verdicts_distinct_flows": distinct,
        "verdicts_cold_per_distinct_us": cold / distinct * 1e6,
        "verdicts_s": seconds,
        **{f"verdicts_{k}": v for k, v in outcomes.items()},
    }


def bench_nft_load(peers: int = 5000) -> dict[str, Any]:
    """Load a ruleset whose ingress peer set holds `peers` addresses with `nft -f` in an ms- netns."""
    if os.geteuid() != 0 or not _has("nft"):
        return {"nft_load_ms": None, "nft_load_note": "needs root and nft; not measured"}
    nets = tuple(
        addresses.network(str(ipaddress.ip_address(int(ipaddress.ip_address("10.77.0.0")) + i)))
        for i in range(1, peers + 1)
    )
    doc = ruleset.RulesetDocument(
        workload="bench",
        addresses=(addresses.network("10.79.0.1"),),
        mode=workloads.Mode.ENFORCE,
        policy_version="bench",
        tiers=("application",),
        control_plane=(),
        address_sets=(ruleset.AddressSet("peers", nets),),
        ingress=(
            ruleset.Entry(
                "application/bench",
                "application",
                rules.Action.ALLOW,
                ("peers",),
                None,
                (services.PortSpec(services.Protocol.TCP, (services.PortRange(443, 443),)),),
            ),
        ),
        egress=(),
    ).with_hash()
    text = nftables.render(doc, settings.RenderSettings()).text
    ns = f"ms-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(text)
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        cmd = ["nsenter", f"--net=/run/netns/{ns}", "nft", "-f", fh.name]
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            times.append(time.perf_counter() - start)
        spawn, _ = timed(lambda: subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "true"], check=True), 5)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        os.unlink(fh.name)
    return {
        "nft_load_ms": statistics.median(times) * 1000,
        "nft_spawn_floor_ms": spawn * 1000,
        "nft_peers": peers,
        "nft_text_bytes": len(text),
    }


def _has(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--label-sets", type=int, default=500)
    parser.add_argument("--rules", type=int, default=2_000)
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--nft-peers", type=int, default=5_000)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/engine.json")
    args = parser.parse_args()
    rnd = random.Random(1)
    gen_s, est = timed(lambda: synthetic.generate(args.workloads, args.label_sets, args.rules, seed=0))
    compile_s, docs_s, eng = bench_compile(est)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}",
        "workloads": args.workloads,
        "label_sets": args.label_sets,
        "rules": args.rules,
        "identities": len(eng.rulesets),
        "selectors": len(eng.book.selectors),
        "generate_s": gen_s,
        "full_compile_s": compile_s,
        "all_documents_s": docs_s,
        **bench_relabel(eng, rnd),
        **bench_readdress(eng, rnd),
        **bench_verdicts(eng, rnd, args.verdicts),
        **bench_nft_load(args.nft_peers),
    }
    print(markdown(result))
    if not args.no_write:
        RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def markdown(r: dict[str, Any]) -> str:
    """The table BENCHMARKS.md shows."""

    def row(what: str, target: str, value: float | None, unit: str, limit: float | None) -> str:
        if value is None:
            return f"| {what} | {target} | not measured | - |"
        verdict = "-" if limit is None else ("met" if value <= limit else "**missed**")
        return f"| {what} | {target} | {value:,.2f} {unit} | {verdict} |"

    lines = [
        f"Estate: {r['workloads']:,} workloads, {r['label_sets']} label sets, {r['rules']:,} rules "
        f"-> {r['identities']} identities, {r['selectors']} distinct selectors. Machine: {r['machine']}.",
        "",
        "| what | target | measured | |",
        "|---|---|---|---|",
        row("full compile (rulesets + set members)", "<= 5 s", r["full_compile_s"], "s", 5),
        row("materialise + hash every document", "-", r["all_documents_s"], "s", None),
        row("relabel one workload (median)", "<= 20 ms", r["relabel_ms_median"], "ms", 20),
        row("relabel into a new identity (median)", "-", r["relabel_new_identity_ms_median"], "ms", None),
        row("address change -> set-member delta (median)", "<= 5 ms", r["readdress_ms_median"], "ms", 5),
        row(
            f"{r['verdicts']:,} verdicts ({r['verdicts_distinct_flows']:,} distinct flows)",
            "<= 3 s",
            r["verdicts_s"],
            "s",
            3,
        ),
        row("one verdict computed cold (no cache)", "-", r["verdicts_cold_per_distinct_us"], "us", None),
        row(
            f"nft -f with {r.get('nft_peers', 0):,} peer addresses (netns)",
            "<= 100 ms",
            r.get("nft_load_ms"),
            "ms",
            100,
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
