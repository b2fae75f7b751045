"""Kubernetes NetworkPolicy analysis benchmark; run by `bench/run`, judged by bench/report.py.

Target (issue #3; defined in bench/targets.py): an estate of 2,000 pods in 50 namespaces with 500
NetworkPolicies, all ordered pairs on 3 ports (about 12 million verdicts), analysed.

Run: .venv/bin/python bench/bench_k8s.py [--quick] [--pods N --namespaces N --policies N] [--no-json]
[--output FILE]
It prints and writes the raw figures (default bench/results/adhoc/k8s.json); `bench/run` is what
writes bench/results/ and BENCHMARKS.md. The manifests come from
`microseg.k8s.synthetic.manifests_text` (seed 0). Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microseg.cli import k8s
from microseg.k8s import manifests, reachability, synthetic
from microseg.model import services

RESULTS = Path(__file__).parent / "results" / "adhoc" / "k8s.json"
"""Where a run of this script alone writes; `bench/run` gives --output (see bench/runner.py)."""
QUICK = {"pods": 500, "namespaces": 20, "policies": 125, "no_json": True}
"""Sizes of `--quick` (a smoke run: its figures are never judged against the targets)."""
PROBES = [
    reachability.Probe(8080),
    reachability.Probe(5432),
    reachability.Probe(53, services.Protocol.UDP),
]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time in seconds of one run, and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_out(result: reachability.Reachability) -> tuple[int, int]:
    """Every verdict, one by one, as a consumer of the analysis sees them."""
    total = allowed = 0
    for _, _, _, ok in result.verdicts():
        total += 1
        allowed += ok
    return total, allowed


def write_all_json(result: reachability.Reachability) -> tuple[float, int]:
    """Seconds to write the whole `-o json` output (every connection with its reason), and its size."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        counting = Counting(sink)
        start = time.perf_counter()
        k8s.write_json(result, counting)
        return time.perf_counter() - start, counting.size


class Counting(io.TextIOBase):
    """A text sink that counts what it is given."""

    def __init__(self, sink: io.TextIOBase | Any) -> None:
        self.sink = sink
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        return int(self.sink.write(text))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--no-json", action="store_true", help="skip writing the full -o json output")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the raw figures go (JSON)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    text = synthetic.manifests_text(args.pods, args.namespaces, args.policies, seed=0)
    parse_s, found = timed(lambda: manifests.load_text(text, "synthetic.yaml"))
    compute_s, result = timed(lambda: reachability.Reachability(found, PROBES))
    read_s, (total, allowed) = timed(lambda: read_out(result))
    json_s, json_chars = (0.0, 0) if args.no_json else write_all_json(result)
    analysis_s = parse_s + compute_s + read_s
    figures = {
        "pods": len(found.pods),
        "namespaces": len(found.namespaces),
        "policies": len(found.policies),
        "ports": len(PROBES),
        "manifest_bytes": len(text),
        "verdicts": total,
        "allowed": allowed,
        "parse_s": parse_s,
        "compute_s": compute_s,
        "read_out_s": read_s,
        "analysis_s": analysis_s,
        "json_s": None if args.no_json else json_s,
        "json_chars": None if args.no_json else json_chars,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
