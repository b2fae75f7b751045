"""bench/report.py judges results against bench/targets.py: met or missed from the raw figure and the
target, never judged for a quick run or on smaller inputs than the target's, and BENCHMARKS.md
rewritten only between its markers. bench/runner.py's envelope records where figures come from.
Nothing here times anything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import runner  # noqa: E402
import sizing  # noqa: E402
import targets  # noqa: E402

FULL_ENGINE: dict[str, Any] = {
    "workloads": 10_000, "label_sets": 500, "rules": 2_000, "identities": 500, "selectors": 1_502,
    "full_compile_s": 4.2, "all_documents_s": 6.0, "relabel_ms_median": 25.0, "readdress_ms_median": 5.0,
    "verdicts": 1_000_000, "verdicts_distinct_flows": 500_000, "verdicts_timed_rules": 60, "verdicts_s": 2.5,
    "nft_peers": 5_000, "nft_rendered_elements": 5_000, "nft_loaded_elements": 5_000, "nft_load_ms": 40.0,
    "scale_workloads": 50_000, "scale_rules": 5_000, "scale_compile_s": 12.0, "scale_peak_rss_mb": 900.0,
}  # fmt: skip


def envelope(figures: dict[str, Any], *, quick: bool = False, status: str = "ok") -> dict[str, Any]:
    return {
        "bench": "engine", "quick": quick, "status": status, "reason": None if status == "ok" else "it broke",
        "commit": {"sha": "0123456789abcdef", "dirty": True}, "date": "2026-12-07T10:00:00Z",
        "wall_seconds": 12.0, "load_before": [0.5, 0.4, 0.3], "load_after": [1.0, 0.5, 0.3],
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gb": 23.4, "kernel": "6.1", "python": "3.11.7"},
        "inputs": {}, "figures": figures,
    }  # fmt: skip


def row(section: targets.Section, figure: str) -> targets.Row:
    return next(r for r in section.rows if r.figure.__doc__ == figure)


@pytest.mark.parametrize(
    ("figure", "verdict"),
    [
        ("full_compile_s", report.MET),  # 4.2 <= 5
        ("relabel_ms_median", report.MISSED),  # 25 > 20
        ("readdress_ms_median", report.MET),  # 5 <= 5: the bound itself meets
        ("verdicts_s", report.MET),
        ("nft_load_ms", report.MET),
        ("scale_compile_s", report.MISSED),  # 12 > 10
        ("scale_peak_rss_mb", report.MET),
        ("all_documents_s", report.NO_TARGET),
    ],
    ids=str,
)
def test_a_full_run_is_judged_against_the_target(figure: str, verdict: str) -> None:
    assert report.judge(row(targets.ENGINE, figure), envelope(FULL_ENGINE)).verdict == verdict


def test_at_least_targets_are_judged_the_other_way() -> None:
    ingest = row(targets.SERVER, "runs.sqlite.ingest.records_per_second")
    measured = {"records": 200_000, "records_per_second": 49_999, "invariants": 2}
    figures: dict[str, Any] = {"batches": 200, "runs": {"sqlite": {"ingest": measured}}}
    assert report.judge(ingest, envelope(figures)).verdict == report.MISSED
    figures["runs"]["sqlite"]["ingest"]["records_per_second"] = 50_000
    cell = report.judge(ingest, envelope(figures))
    assert (cell.verdict, cell.measured, cell.target) == (
        report.MET,
        "50,000 records/s",
        ">= 50,000 records/s (#4, #17)",
    )
    measured["invariants"] = 0  # #17: invariant checks included, or the figure flatters
    assert report.judge(ingest, envelope(figures)).verdict.startswith("not judged")


def test_a_quick_run_is_never_judged() -> None:
    cell = report.judge(row(targets.ENGINE, "full_compile_s"), envelope(FULL_ENGINE, quick=True))
    assert (cell.verdict, cell.measured) == (report.QUICK, "4.20 s")


def test_results_that_do_not_say_they_are_a_full_run_are_not_judged() -> None:
    unmarked = envelope(FULL_ENGINE)
    del unmarked["quick"]
    assert report.judge(row(targets.ENGINE, "full_compile_s"), unmarked).verdict == report.QUICK


def test_a_target_is_not_judged_on_smaller_inputs_than_its_own() -> None:
    few = {**FULL_ENGINE, "verdicts_distinct_flows": 100_000, "verdicts_timed_rules": 0}
    verdict = report.judge(row(targets.ENGINE, "verdicts_s"), envelope(few)).verdict
    assert verdict == "not judged: the target needs 500,000 distinct flows, time-windowed rules present"


def test_merged_nft_peers_are_not_judged() -> None:
    merged = {**FULL_ENGINE, "nft_rendered_elements": 17}
    assert report.judge(row(targets.ENGINE, "nft_load_ms"), envelope(merged)).verdict.startswith("not judged")


def test_a_missing_figure_or_a_failed_run_is_not_measured() -> None:
    without = {k: v for k, v in FULL_ENGINE.items() if k != "nft_load_ms"}
    assert report.judge(row(targets.ENGINE, "nft_load_ms"), envelope(without)).verdict == report.NOT_MEASURED
    failed = envelope(FULL_ENGINE, status="failed")
    assert report.judge(row(targets.ENGINE, "full_compile_s"), failed).verdict == report.NOT_MEASURED
    assert report.judge(row(targets.ENGINE, "full_compile_s"), None).verdict == report.NOT_MEASURED
    assert "**failed**: it broke" in report.render(targets.ENGINE, failed)


def test_issue_17_fleet_targets_read_not_measured_until_a_bench_measures_them() -> None:
    text = report.render(targets.SERVER, envelope({"batches": 200, "runs": {}}))
    fleet = [line for line in text.splitlines() if "every agent parked" in line]
    assert len(fleet) == 2 and all(line.endswith("| not measured |") for line in fleet)


def test_the_agent_ratio_target_reads_the_paired_ratio() -> None:
    figures = {"peers": 5000, "rows": {"agent": {"rounds": 9}},
               "ratios": [{"top": "agent", "bottom": "none", "paired": 0.79, "of_medians": 0.95}]}  # fmt: skip
    share = row(targets.AGENT, "ratios[agent / none].paired")
    assert report.judge(share, envelope(figures)).verdict == report.MISSED


def test_the_block_says_where_the_figures_come_from() -> None:
    text = report.render(targets.ENGINE, envelope(FULL_ENGINE))
    assert "`bench/run` at `0123456789` with uncommitted changes, 2026-12-07T10:00:00Z" in text
    assert (
        "Test CPU, 2 cores, 23.4 GB, Linux 6.1, Python 3.11.7; load average 0.50 / 0.40 / 0.30 before" in text
    )
    assert "Inputs: workloads 10,000; label sets 500;" in text


DOCUMENT = """# Benchmarks
Prose stays.
<!-- generated:engine -->
old table
<!-- /generated -->
More prose.
"""


def test_rewrite_replaces_only_what_is_between_the_markers() -> None:
    out = report.rewrite(DOCUMENT, {"engine": "new table\n"})
    assert out == DOCUMENT.replace("old table", "new table")


def test_rewrite_refuses_a_document_without_a_sections_markers() -> None:
    with pytest.raises(report.RefusedError, match="missing \\['server'\\]"):
        report.rewrite(DOCUMENT, {"engine": "x\n", "server": "y\n"})


def test_quick_results_are_refused_for_benchmarks_md(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text(DOCUMENT)
    with pytest.raises(report.RefusedError, match="quick results \\(engine\\)"):
        report.write_benchmarks({"engine": envelope(FULL_ENGINE, quick=True)}, document, tmp_path / "none.md")
    assert document.read_text() == DOCUMENT


def test_full_results_are_written_into_their_block(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text("".join(f"<!-- generated:{n} -->\n<!-- /generated -->\n" for n in targets.SECTIONS))
    scale_out = tmp_path / "scale-out.md"
    scale_out.write_text("# Scale-out\n<!-- generated:sizing -->\n<!-- /generated -->\n")
    report.write_benchmarks({"engine": envelope(FULL_ENGINE)}, document, scale_out)
    assert "No server results yet" in scale_out.read_text()
    text = document.read_text()
    assert "| full compile (rulesets + set members), median of 3 | <= 5 s (#2) | 4.20 s | met |" in text
    assert text.count("No results yet: run `bench/run`.") == len(targets.SECTIONS) - 1


def test_benchmarks_md_holds_every_block_once() -> None:
    document = (BENCH.parent / "BENCHMARKS.md").read_text()
    report.rewrite(document, report.blocks({}))


def test_benchmarks_md_blocks_are_what_the_committed_results_give() -> None:
    """Nobody edits a generated block by hand, and results are never committed without their tables."""
    document = (BENCH.parent / "BENCHMARKS.md").read_text()
    assert report.rewrite(document, report.blocks(report.load_results(report.RESULTS))) == document


def test_results_files_that_are_not_envelopes_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "engine.json").write_text(json.dumps(FULL_ENGINE))  # raw figures, as before bench/run
    (tmp_path / "k8s.json").write_text(json.dumps(envelope({"pods": 1})))
    found = report.load_results(tmp_path)
    assert found["engine"] is None and found["k8s"] is not None


# -- the runner's envelope -------------------------------------------------------------------


FAKE_BENCH = """
import json, sys
out = sys.argv[sys.argv.index("--output") + 1]
json.dump({"pods": 2000, "namespaces": 50, "policies": 500, "analysis_s": 1.5, "args": sys.argv[1:-2]},
          open(out, "w"))
"""


def test_the_runner_wraps_raw_figures_in_an_envelope(tmp_path: Path) -> None:
    script = tmp_path / "fake_bench.py"
    script.write_text(FAKE_BENCH)
    bench = runner.Bench("k8s", str(script), ("--full-size",), ("--quick",), 60)
    written = runner.run_bench(bench, True, tmp_path, tmp_path)
    assert json.loads((tmp_path / "k8s.json").read_text()) == written
    assert written["status"] == "ok" and written["quick"] is True
    assert written["figures"]["args"] == ["--quick"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", written["date"])
    assert re.fullmatch(r"[0-9a-f]{40}", written["commit"]["sha"]) and isinstance(
        written["commit"]["dirty"], bool
    )
    assert set(written["machine"]) == {"cpu", "cores", "memory_gb", "kernel", "python"}
    assert len(written["load_before"]) == len(written["load_after"]) == 3
    assert written["inputs"]["pods"] == 2000


def test_a_bench_that_fails_is_recorded_as_failed_without_figures(tmp_path: Path) -> None:
    script = tmp_path / "broken_bench.py"
    script.write_text("raise SystemExit('no database here')\n")
    written = runner.run_bench(runner.Bench("k8s", str(script), (), (), 60), False, tmp_path, tmp_path)
    assert (written["status"], written["figures"]) == ("failed", {})
    assert "no database here" in written["reason"]


def test_the_agent_bench_without_a_lab_is_recorded_as_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "lab_problem", lambda: "needs root (network namespaces, nft, iptables)")
    agent = next(b for b in runner.BENCHES if b.name == "agent")
    written = runner.run_bench(agent, False, tmp_path, tmp_path)
    assert (written["status"], written["reason"]) == (
        "not run",
        "needs root (network namespaces, nft, iptables)",
    )
    assert "**not run**: needs root" in report.render(targets.AGENT, written)


SLEEPER = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(60)
"""

RUNNER = """
import sys
sys.path.insert(0, {bench!r})
import runner
runner.end_on_sigterm()
runner._run([sys.executable, {sleeper!r}, {pidfile!r}], 60, __import__("pathlib").Path({log!r}))
"""


def test_a_sigterm_to_the_runner_ends_the_running_bench_too(tmp_path: Path) -> None:
    sleeper, pidfile = tmp_path / "sleeper.py", tmp_path / "bench.pid"
    sleeper.write_text(SLEEPER)
    code = RUNNER.format(
        bench=str(BENCH), sleeper=str(sleeper), pidfile=str(pidfile), log=str(tmp_path / "log")
    )
    with subprocess.Popen([sys.executable, "-c", code]) as proc:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the bench never started"
            time.sleep(0.05)
        bench_pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # ended by the runner, not left behind
        for _ in range(100):
            os.kill(bench_pid, 0)
            time.sleep(0.05)


def test_the_sizing_table_shows_each_backends_figures_and_what_was_not_measured() -> None:
    figures = {"runs": {"sqlite": {"fleet": {"agents": 10_000, "seconds_to_last_agent": 2.5, "rss_mb": 900},
                                   "ingest": {"records_per_second": 40_000.4}},
                        "postgres": {"ingest": {"records_per_second": 41_000}}}}  # fmt: skip
    text = sizing.block(envelope(figures), report.provenance(envelope(figures)))
    assert "| agents long-polling one replica | 10,000 | not measured |" in text
    assert "| provision -> the last agent has its ruleset (s) | 2.50 | not measured |" in text
    assert "| 40,000 | 41,000 |" in text and "`0123456789`" in text


def test_the_sizing_table_in_scale_out_md_is_what_the_committed_results_give() -> None:
    document = report.SCALE_OUT.read_text()
    assert report.rewrite(document, report.sizing_blocks(report.load_results(report.RESULTS))) == document
