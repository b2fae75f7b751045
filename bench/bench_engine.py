"""Engine benchmarks on a generated estate; run by `bench/run`, judged by bench/report.py.

Targets (issue #2, #17; defined in bench/targets.py), on 10,000 workloads, 500 label sets and
2,000 rules: full compile; one workload relabelled -> every affected document rebuilt; one address
change -> set-member delta; 1,000,000 verdicts over 500,000 distinct flows with the estate's
time-windowed rules in place, on a fresh engine; a ruleset with 5,000 peer addresses that cannot
merge into prefixes loads with `nft -f` inside a network namespace (root only); and a full compile
of 50,000 workloads / 5,000 rules (time and peak RSS, in a child process).

Run: .venv/bin/python bench/bench_engine.py [--quick] [--output FILE] (--help for the sizes)
It prints and writes the raw figures (default bench/results/adhoc/engine.json); `bench/run` is
what writes bench/results/ and BENCHMARKS.md. Nothing here judges a figure against a target.
"""

from __future__ import annotations

import argparse
import collections
import gc
import ipaddress
import json
import multiprocessing
import os
import random
import resource
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

RESULTS = Path(__file__).parent / "results" / "adhoc" / "engine.json"
"""Where a run of this script alone writes; `bench/run` gives --output (see bench/runner.py)."""


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


def bench_relabel(eng: engine.PolicyEngine, rnd: random.Random, n: int) -> dict[str, float]:
    """Move a workload to another existing label set (and to a brand-new one). The timer runs until
    every affected document is rebuilt (what the server must send), not just until the engine knows
    which ones changed; the engine's share is reported on its own."""
    names = eng.workload_names()
    label_sets = sorted({eng.workload(x).labels for x in names[:2000]})
    engine_times, times, new_times, touched = [], [], [], []
    for i in range(n):
        w = eng.workload(rnd.choice(names))
        target = rnd.choice(label_sets)
        t_engine, delta = timed(lambda w=w, target=target: eng.upsert_workload(w.with_labels(target)))
        t_docs, rebuilt = timed(lambda delta=delta: _rebuild(eng, delta))
        engine_times.append(t_engine)
        times.append(t_engine + t_docs)
        touched.append(rebuilt)
        fresh = w.labels.merged({"role": f"bench-{i}"})  # a role no label set has: a new identity
        t2, delta2 = timed(lambda w=w, fresh=fresh: eng.upsert_workload(w.with_labels(fresh)))
        t2_docs, _ = timed(lambda delta2=delta2: _rebuild(eng, delta2))
        new_times.append(t2 + t2_docs)
    return {
        "relabel_repeats": n,
        "relabel_ms_median": statistics.median(times) * 1000,
        "relabel_ms_max": max(times) * 1000,
        "relabel_engine_only_ms_median": statistics.median(engine_times) * 1000,
        "relabel_new_identity_ms_median": statistics.median(new_times) * 1000,
        "relabel_documents_rebuilt_median": statistics.median(touched),
    }


def _rebuild(eng: engine.PolicyEngine, delta: Any) -> int:
    """Rebuild (and hash) the document of every managed workload a change touched; how many."""
    rebuilt = [eng.document(name) for name in delta.workloads if eng.workload(name).managed]
    return len(rebuilt)


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


def bench_verdicts(est: Any, rnd: random.Random, count: int, distinct: int) -> dict[str, Any]:
    """`count` verdicts as a flow-history replay sees them: `distinct` different (source,
    destination, port) flows between random workloads on ports the rules name, each seen
    count/distinct times in random order, answered by a freshly built engine (nothing computed
    before the clock starts). The estate's time-windowed rules stay in: they are part of the input.
    Also the cold figure: one pass over distinct flows on another fresh engine."""
    eng = engine.PolicyEngine(est)
    endpoints = [eng.endpoint(x) for x in eng.workload_names()]
    probes = sorted(
        {(s.protocol, r.first) for br in eng.book.rules for svc in br.rule.services for s in svc.specs
         for r in s.ports}
    )[:64] or [(services.Protocol.TCP, 80)]  # fmt: skip
    flows: dict[tuple[int, int, int], services.Protocol] = {}  # distinct (src, dst, port)
    while len(flows) < distinct:
        src, dst = rnd.randrange(len(endpoints)), rnd.randrange(len(endpoints))
        proto, port = rnd.choice(probes)
        if src != dst:
            flows.setdefault((src, dst, port), proto)
    pool = [(endpoints[s], endpoints[d], proto, port) for (s, d, port), proto in flows.items()]
    rnd.shuffle(pool)
    stream = [pool[i % distinct] for i in range(count)]
    rnd.shuffle(stream)

    def run(evaluate: Callable[..., Any], flows: list[tuple[Any, ...]]) -> list[verdicts.Verdict]:
        return [evaluate(src, dst, port, proto) for src, dst, proto, port in flows]

    seconds, answers = timed(lambda: run(eng.evaluate, stream))
    cold_engine = engine.PolicyEngine(est)
    sample = pool[: min(distinct, 100_000)]
    cold, _ = timed(lambda: run(cold_engine.evaluate, sample))
    outcomes = collections.Counter(v.outcome.value for v in answers)  # type: ignore[attr-defined]
    return {
        "verdicts": count,
        "verdicts_distinct_flows": len({(s.address, d.address, port) for s, d, _, port in stream}),
        "verdicts_timed_rules": sum(r.not_before is not None or r.not_after is not None for r in est.rules),
        "verdicts_cold_per_distinct_us": cold / len(sample) * 1e6,
        "verdicts_s": seconds,
        **{f"verdicts_{k}": v for k, v in outcomes.items()},
    }


def scattered_peers(count: int, rnd: random.Random) -> list[str]:
    """`count` addresses no two of which are adjacent (every other address of random /24s inside
    10.64.0.0/10), so the renderer cannot merge any of them into a prefix or range."""
    blocks = rnd.sample(range(1 << 14), k=-(-count // 127))  # /24s in 10.64.0.0/10; 127 odd hosts each
    base = int(ipaddress.ip_address("10.64.0.0"))
    hosts = [base + (block << 8) + offset for block in blocks for offset in range(1, 255, 2)]
    return [str(ipaddress.ip_address(h)) for h in sorted(rnd.sample(hosts, k=count))]


def rendered_elements(text: str, set_name: str) -> int:
    """Elements written into set `set_name` of a rendered ruleset (a prefix or range counts once)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"set {set_name} {{")
    inside, count = False, 0
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped == "elements = {":
            inside = True
        elif inside and stripped == "}":
            return count
        elif inside:
            count += 1
        elif stripped == "}":
            return 0
    return count


def loaded_elements(ns: str, set_name: str) -> int:
    """Elements of set `set_name` of table inet microseg as the kernel holds it in namespace `ns`."""
    out = subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", "nft", "-j", "list", "set", "inet", "microseg", set_name],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    listed = next(x["set"] for x in json.loads(out)["nftables"] if "set" in x)
    return len(listed.get("elem", []))


def peer_document(peers: list[str]) -> ruleset.RulesetDocument:
    """One ruleset allowing tcp/443 from a set of `peers` addresses."""
    return ruleset.RulesetDocument(
        workload="bench",
        addresses=(addresses.network("10.79.0.1"),),
        mode=workloads.Mode.ENFORCE,
        policy_version="bench",
        tiers=("application",),
        control_plane=(),
        address_sets=(ruleset.AddressSet("peers", tuple(addresses.network(p) for p in peers)),),
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


def bench_nft_load(peers: int, rnd: random.Random) -> dict[str, Any]:
    """Load a ruleset whose ingress peer set holds `peers` scattered addresses with `nft -f` in an
    ms- netns; the element count is checked in the rendered text and in the kernel."""
    text = nftables.render(peer_document(scattered_peers(peers, rnd)), settings.RenderSettings()).text
    figures: dict[str, Any] = {
        "nft_peers": peers,
        "nft_rendered_elements": rendered_elements(text, "peers_v4"),
        "nft_text_bytes": len(text),
    }
    if figures["nft_rendered_elements"] != peers:
        raise SystemExit(f"the rendered set holds {figures['nft_rendered_elements']} elements, not {peers}")
    if os.geteuid() != 0 or not _has("nft"):
        return {**figures, "nft_load_ms": None, "nft_load_note": "needs root and nft; not measured"}
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
        figures["nft_loaded_elements"] = loaded_elements(ns, "peers_v4")
        spawn, _ = timed(lambda: subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "true"], check=True), 5)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        os.unlink(fh.name)
    return {**figures, "nft_load_ms": statistics.median(times) * 1000, "nft_spawn_floor_ms": spawn * 1000}


def _has(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":"))


def bench_scale_compile(workloads: int, rules: int) -> dict[str, Any]:
    """A full compile of a larger estate (label sets a tenth of the workloads), in a fresh (spawned,
    not forked) interpreter so that its peak RSS is its own: seconds and peak MB, generation not
    counted (its peak is in the RSS: the server holds its estate too)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_scale_child, args=(workloads, rules, queue))
    child.start()
    figures: dict[str, Any] = queue.get()
    child.join()
    return figures


def _scale_child(workloads: int, rules: int, queue: Any) -> None:
    label_sets = max(1, workloads // 10)
    est = synthetic.generate(workloads, label_sets, rules, seed=0)
    gc.collect()
    start = time.perf_counter()
    eng = engine.PolicyEngine(est)
    seconds = time.perf_counter() - start
    queue.put({
        "scale_workloads": workloads, "scale_label_sets": label_sets, "scale_rules": rules,
        "scale_identities": len(eng.rulesets), "scale_compile_s": seconds,
        "scale_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })  # fmt: skip


QUICK = {"workloads": 2_000, "label_sets": 100, "rules": 400, "verdicts": 100_000, "distinct_flows": 50_000,
         "relabels": 3, "scale_workloads": 5_000, "scale_rules": 500}  # fmt: skip
"""Sizes of `--quick` (a smoke run: its figures are never judged against the targets)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--label-sets", type=int, default=500)
    parser.add_argument("--rules", type=int, default=2_000)
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--distinct-flows", type=int, default=500_000, help="distinct flows in the verdicts")
    parser.add_argument("--relabels", type=int, default=10, help="relabels timed (each rebuilds documents)")
    parser.add_argument("--nft-peers", type=int, default=5_000)
    parser.add_argument("--scale-workloads", type=int, default=50_000, help="workloads of the large compile")
    parser.add_argument("--scale-rules", type=int, default=5_000, help="rules of the large compile")
    parser.add_argument("--quick", action="store_true", help=f"smaller sizes: {QUICK}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the raw figures go (JSON)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    rnd = random.Random(1)
    gen_s, est = timed(lambda: synthetic.generate(args.workloads, args.label_sets, args.rules, seed=0))
    compile_s, docs_s, eng = bench_compile(est)
    result: dict[str, Any] = {
        "workloads": args.workloads,
        "label_sets": args.label_sets,
        "rules": args.rules,
        "identities": len(eng.rulesets),
        "selectors": len(eng.book.selectors),
        "generate_s": gen_s,
        "full_compile_s": compile_s,
        "all_documents_s": docs_s,
        **bench_relabel(eng, rnd, args.relabels),
        **bench_readdress(eng, rnd),
        **bench_verdicts(est, rnd, args.verdicts, min(args.distinct_flows, args.verdicts)),
        **bench_nft_load(args.nft_peers, rnd),
        **bench_scale_compile(args.scale_workloads, args.scale_rules),
    }
    print(json.dumps(result, indent=2, sort_keys=True))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
