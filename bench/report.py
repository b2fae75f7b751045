"""BENCHMARKS.md's tables, generated from bench/results/*.json and judged against bench/targets.py.

Fed by the results files `bench/runner.py` writes (one per bench: the raw figures in an envelope
holding the commit, date, machine, load average and inputs); feeds the blocks of BENCHMARKS.md
between `<!-- generated:<bench> -->` and `<!-- /generated -->`. Everything else in BENCHMARKS.md
(the prose explaining method) is left as it is.

A quick run (`bench/run --quick`, written to bench/results/quick/) is never judged: its rows say
"quick run: not judged", and writing BENCHMARKS.md from quick results is refused. A full run's row
is judged only when the run's inputs are those its target was set on (`targets.Needs`).

Run: .venv/bin/python bench/report.py            rewrite BENCHMARKS.md from bench/results/
     .venv/bin/python bench/report.py --quick    print the tables of bench/results/quick/
     .venv/bin/python bench/report.py --check    exit 1 when BENCHMARKS.md is not what the results give
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sizing
import targets

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
QUICK_RESULTS = RESULTS / "quick"
BENCHMARKS = BENCH.parent / "BENCHMARKS.md"
SCALE_OUT = BENCH.parent / "docs" / "scale-out.md"
"""Its `generated:sizing` block is the sizing table (bench/sizing.py) from the server results."""
BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)

MET, MISSED, NO_TARGET = "met", "**missed**", "-"
NOT_MEASURED, QUICK = "not measured", "quick run: not judged"


class RefusedError(Exception):
    """The results cannot be written into BENCHMARKS.md (quick results, or markers missing)."""


@dataclass(frozen=True)
class Cell:
    """One row as shown: the target, the figure and the verdict."""

    target: str
    measured: str
    verdict: str


def judge(row: targets.Row, results: dict[str, Any] | None) -> Cell:
    """The row's figure from `results` (an envelope; None when there is no results file) and whether
    it meets the row's target."""
    target, wanted = row.target, target_text(row)
    ok = results is not None and results.get("status") == "ok"
    value = row.value(results["figures"]) if ok and results is not None else None
    if value is None:
        return Cell(wanted, "-", NOT_MEASURED if target is not None else NO_TARGET)
    measured = f"{value:{row.spec}} {row.unit}".strip()
    if target is None:
        return Cell(wanted, measured, NO_TARGET)
    assert results is not None
    if results.get("quick", True):  # a file that does not say it is a full run is not one
        return Cell(wanted, measured, QUICK)
    missing = [n.what for n in target.needs if not n.holds(results["figures"])]
    if missing:
        return Cell(wanted, measured, "not judged: the target needs " + ", ".join(missing))
    return Cell(wanted, measured, MET if target.met(value) else MISSED)


def target_text(row: targets.Row) -> str:
    """'<= 5 s (#2)', or '-' for a row without a target."""
    if row.target is None:
        return "-"
    bound = f"{row.target.limit:,g} {row.unit}".strip()
    return f"{row.target.op} {bound} ({row.target.issue})"


def render(section: targets.Section, results: dict[str, Any] | None) -> str:
    """The generated block of one bench: where the figures come from, the inputs, the table."""
    lines = [provenance(results), ""]
    if results is not None and results.get("status") == "ok":
        lines += [inputs_line(section, results["figures"]), ""]
    lines += ["| what | target | measured | |", "|---|---|---:|---|"]
    for row in section.rows:
        cell = judge(row, results)
        lines.append(f"| {row.what} | {cell.target} | {cell.measured} | {cell.verdict} |")
    return "\n".join(lines) + "\n"


def provenance(results: dict[str, Any] | None) -> str:
    """Which run the figures come from, on what, under what load."""
    if results is None:
        return "No results yet: run `bench/run`."
    commit = results["commit"]
    sha = f"`{commit['sha'][:10]}`" + (" with uncommitted changes" if commit.get("dirty") else "")
    kind = "`bench/run --quick`" if results.get("quick", True) else "`bench/run`"
    m = results["machine"]
    load = (
        f"load average {_load(results.get('load_before'))} before, {_load(results.get('load_after'))} after"
    )
    where = (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']:.1f} GB, Linux {m['kernel']}, Python {m['python']}"
    )
    text = f"{kind} at {sha}, {results['date']}, {results['wall_seconds']:,.0f} s; {where}; {load}."
    if results.get("status") != "ok":
        text += f" **{results.get('status', 'failed')}**: {results.get('reason', 'no reason recorded')}"
    return text


def _load(values: list[float] | None) -> str:
    return "?" if not values else " / ".join(f"{v:.2f}" for v in values)


def inputs_line(section: targets.Section, figures: dict[str, Any]) -> str:
    """'Inputs: 10,000 workloads, ...' from the section's input getters."""
    parts = []
    for item in section.inputs:
        value = item.figure(figures)
        if value is not None:
            shown = f"{value:,}" if isinstance(value, int | float) else str(value)
            parts.append(f"{item.what} {shown}")
    return "Inputs: " + ("; ".join(parts) if parts else "none recorded") + "."


def load_results(directory: Path) -> dict[str, dict[str, Any] | None]:
    """Each section's envelope in `directory` (None where there is no file or it is not one)."""
    found: dict[str, dict[str, Any] | None] = {}
    for name in targets.SECTIONS:
        file = directory / f"{name}.json"
        data = json.loads(file.read_text()) if file.exists() else None
        found[name] = data if isinstance(data, dict) and "figures" in data and "commit" in data else None
    return found


def blocks(results: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    """The generated text of every section."""
    return {name: render(section, results.get(name)) for name, section in targets.SECTIONS.items()}


def rewrite(document: str, generated: dict[str, str]) -> str:
    """`document` with the body of each `generated:<name>` block replaced; every section's block
    must be present exactly once."""
    seen = [m.group("name") for m in BLOCK.finditer(document)]
    missing = sorted(set(generated) - set(seen))
    doubled = sorted({n for n in seen if seen.count(n) > 1})
    if missing or doubled:
        raise RefusedError(f"BENCHMARKS.md markers: missing {missing}, more than once {doubled}")
    return BLOCK.sub(
        lambda m: m.group(1) + generated.get(m.group("name"), m.group("body")) + m.group(4), document
    )


def write_benchmarks(
    results: dict[str, dict[str, Any] | None], document: Path = BENCHMARKS, scale_out: Path = SCALE_OUT
) -> None:
    """Rewrite the generated blocks of BENCHMARKS.md and the sizing table of docs/scale-out.md;
    refused when any results are a quick run's."""
    quick = sorted(name for name, r in results.items() if r is not None and r.get("quick", True))
    if quick:
        raise RefusedError(f"quick results ({', '.join(quick)}) are never written into BENCHMARKS.md")
    document.write_text(rewrite(document.read_text(), blocks(results)))
    scale_out.write_text(rewrite(scale_out.read_text(), sizing_blocks(results)))


def sizing_blocks(results: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    """docs/scale-out.md's generated block."""
    server = results.get("server")
    return {"sizing": sizing.block(server, provenance(server))}


def quick_report(results: dict[str, dict[str, Any] | None]) -> str:
    """The tables of a quick run, headed as such (printed, and kept in bench/results/quick/)."""
    parts = ["# Quick run (smaller inputs: nothing here is judged against a target)", ""]
    for name, text in blocks(results).items():
        parts += [f"## {name}", "", text]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="print the tables of bench/results/quick/")
    parser.add_argument("--check", action="store_true", help="only compare BENCHMARKS.md with the results")
    args = parser.parse_args(argv)
    if args.quick:
        text = quick_report(load_results(QUICK_RESULTS))
        (QUICK_RESULTS / "REPORT.md").write_text(text)
        print(text)
        return 0
    results = load_results(RESULTS)
    if args.check:
        for document, generated in ((BENCHMARKS, blocks(results)), (SCALE_OUT, sizing_blocks(results))):
            current = document.read_text()
            if rewrite(current, generated) != current:
                told = f"{document.name} is not what bench/results/ gives: run bench/report.py"
                print(told, file=sys.stderr)
                return 1
        return 0
    try:
        write_benchmarks(results)
    except RefusedError as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 2
    print(f"rewrote the generated blocks of {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
