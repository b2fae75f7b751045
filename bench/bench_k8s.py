"""Kubernetes NetworkPolicy analysis benchmark; figures go to BENCHMARKS.md (see `--help`).

Target (issue #3): an estate of 2,000 pods in 50 namespaces with 500 NetworkPolicies, all ordered
pairs on 3 ports (about 12 million verdicts), analysed in <= 30 s.

Run: .venv/bin/python bench/bench_k8s.py [--pods N --namespaces N --policies N --json-sample N]
It prints a Markdown table and writes bench/results/k8s.json. The manifests come from
`microseg.k8s.synthetic.manifests_text` (seed 0). Timings are wall-clock on whatever machine runs
it; nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microseg.cli import k8s
from microseg.k8s import manifests, reachability, synthetic
from microseg.model import services

RESULTS = Path(__file__).parent / "results" / "k8s.json"
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
    args = parser.parse_args()
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
        "manifest_bytes": len(text),
        "verdicts": total,
        "allowed": allowed,
        "parse_s": parse_s,
        "compute_s": compute_s,
        "read_out_s": read_s,
        "analysis_s": analysis_s,
        "json_s": json_s,
        "json_chars": json_chars,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    met = "met" if analysis_s <= 30 else "MISSED"
    size = f"{len(found.pods)} pods, {len(found.namespaces)} namespaces, {len(found.policies)} policies"
    print(f"{size}, {len(PROBES)} ports: {total:,} verdicts ({allowed:,} allowed)\n")
    print("| what | target | measured | |")
    print("|---|---|---|---|")
    print(f"| read and check the manifests ({len(text) / 1e6:.1f} MB of YAML) | - | {parse_s:.2f} s | - |")
    print(f"| compute every verdict (bitmasks per destination and port) | - | {compute_s:.2f} s | - |")
    print(f"| read out all {total:,} verdicts one by one | - | {read_s:.2f} s | - |")
    print(f"| **analysis: the three together** | <= 30 s | {analysis_s:.2f} s | {met} |")
    if not args.no_json:
        what = f"`-o json`: every connection with its reason ({json_chars / 1e9:.2f} GB)"
        print(f"| {what} | - | {json_s:.1f} s | - |")


if __name__ == "__main__":
    main()
