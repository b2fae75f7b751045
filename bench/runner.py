"""`bench/run [--quick] [--only NAMES]`: every benchmark, one results file each, then the report.

Runs each bench/bench_*.py in its own process with the sizes of a full run (the issues' inputs) or
of a quick one (`--quick`: a smoke run for before saying a hot path is done, meant to finish in
under 3 minutes on the project's 2-core machine), and wraps its raw figures in an envelope:
the commit (and whether the tree had uncommitted changes), the date (UTC, RFC 3339), the machine
(CPU model, cores, memory, kernel, Python), the load average before and after, the command, the
inputs (bench/targets.py names them) and every raw figure. A full run writes bench/results/<bench>.json
and rewrites the generated blocks of BENCHMARKS.md (bench/report.py); a quick run writes
bench/results/quick/<bench>.json and only prints its tables, which are never judged.

The agent bench needs root and a working network-namespace lab; without them it is recorded as not
run, with the reason. A bench that fails is recorded as failed with the end of its output: its
previous figures are not kept, so BENCHMARKS.md never mixes runs within a bench.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
import targets

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its arguments for a full and a quick run."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout_s: float
    output_flag: str = "--output"
    needs_lab: bool = False
    quick_timeout_s: float = 240
    """A quick run's bench is ended after this (far beyond its time on an idle machine: a guard
    against a hang, not a budget; the shared machine can be several times slower)."""


BENCHES = (
    Bench("engine", "bench_engine.py", (), ("--quick",), 1800),
    # the fleet bench (bench_fleet.py, 10,000 agents enrolled over HTTP per backend) is most of it
    Bench("server", "bench_server.py", ("--backends", "sqlite,postgres", "--invariants"),
          ("--quick", "--backends", "sqlite,postgres"), 5400, quick_timeout_s=900),
    Bench("analytics", "bench_analytics.py", ("--backends", "sqlite,postgres"),
          ("--quick", "--backends", "sqlite,postgres"), 5400),
    Bench("k8s", "bench_k8s.py", (), ("--quick",), 900),
    Bench("agent", "bench_agent.py", (), ("--quick",), 1800, output_flag="--out", needs_lab=True,
          quick_timeout_s=480),
)  # fmt: skip
LAB_TOOLS = ("gcc", "nft", "ip", "nsenter", "taskset", "iptables-legacy-restore", "iptables-nft-restore",
             "conntrack")  # fmt: skip


def now() -> str:
    """UTC now, RFC 3339 to the second."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def commit() -> dict[str, Any]:
    """HEAD and whether tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {
        "sha": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(changed),
        "changed_files": len(changed),
    }


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), platform.processor()
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def lab_problem() -> str | None:
    """Why the agent's namespace lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft, iptables)"
    missing = [t for t in LAB_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    probe = f"ms-bnprobe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def run_bench(bench: Bench, quick: bool, out_dir: Path, log_dir: Path) -> dict[str, Any]:
    """Run one bench; its envelope (status ok, failed or not run)."""
    args = bench.quick if quick else bench.full
    raw = log_dir / f"{bench.name}.raw.json"
    raw.unlink(missing_ok=True)
    command = [PYTHON, str(BENCH / bench.script), *args, bench.output_flag, str(raw)]
    envelope: dict[str, Any] = {
        "bench": bench.name, "quick": quick, "commit": commit(), "date": now(), "machine": machine(),
        "command": ["bench/" + bench.script, *args], "load_before": list(os.getloadavg()),
    }  # fmt: skip
    problem = lab_problem() if bench.needs_lab else None
    started = time.monotonic()
    if problem is None:
        status, reason = _run(
            command, bench.quick_timeout_s if quick else bench.timeout_s, log_dir / f"{bench.name}.log"
        )
    else:
        status, reason = "not run", problem
    envelope.update(wall_seconds=round(time.monotonic() - started, 1), load_after=list(os.getloadavg()))
    # a failed bench's figures are kept for diagnosis; the report never judges them
    figures = json.loads(raw.read_text()) if raw.exists() else {}
    if status == "ok" and not figures:
        status, reason = "failed", "the bench wrote no figures"
    section = targets.SECTIONS[bench.name]
    inputs = {i.what: i.figure(figures) for i in section.inputs}
    envelope.update(status=status, reason=reason, inputs=inputs, figures=figures)
    target = out_dir / f"{bench.name}.json"
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(envelope, indent=2, sort_keys=True) + "\n")
    partial.replace(target)
    return envelope


def _run(command: list[str], timeout_s: float, log: Path) -> tuple[str, str | None]:
    """Run `command`, echoing and logging its output; ("ok", None) or ("failed", why). The bench
    runs in a process group of its own, which is ended (SIGTERM: the agent bench then tears its lab
    down) on a timeout or when this runner is interrupted."""
    tail: collections.deque[str] = collections.deque(maxlen=15)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    name = Path(command[1]).stem.removeprefix("bench_")
    with log.open("w") as sink, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        start_new_session=True,
    ) as proc:  # fmt: skip

        def echo() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                tail.append(line.rstrip())
                print(f"[{name}] {line.rstrip()}", flush=True)

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _end(proc)
            return "failed", f"timed out after {timeout_s:.0f} s"
        except BaseException:
            _end(proc)
            raise
        reader.join(timeout=5)
    if code != 0:
        last = next((line.strip() for line in reversed(tail) if line.strip()), "no output")
        return "failed", f"exit status {code}: {last} (the whole output: {log})"
    return "ok", None


def _end(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the bench's process group, then SIGKILL what is left after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def end_on_sigterm() -> None:
    """A SIGTERM to this runner ends the running bench too (its process group, as a timeout does):
    by default the runner would die at once and leave the bench, and the agent bench's lab, behind."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller inputs, never judged, under 3 minutes")
    parser.add_argument(
        "--only", help=f"comma-separated benches (default all: {', '.join(targets.SECTIONS)})"
    )
    args = parser.parse_args(argv)
    end_on_sigterm()
    chosen = args.only.split(",") if args.only else list(targets.SECTIONS)
    unknown = sorted(set(chosen) - set(targets.SECTIONS))
    if unknown:
        parser.error(f"unknown benches {unknown}; there are {', '.join(targets.SECTIONS)}")
    out_dir = report.QUICK_RESULTS if args.quick else report.RESULTS
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started, statuses = time.monotonic(), {}
    for bench in BENCHES:
        if bench.name in chosen:
            envelope = run_bench(bench, args.quick, out_dir, log_dir)
            statuses[bench.name] = envelope["status"] + (
                f" ({envelope['reason']})" if envelope["reason"] else ""
            )
    wall = time.monotonic() - started
    summary = {"quick": args.quick, "finished": now(), "wall_seconds": round(wall, 1), "benches": statuses}
    (log_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    code = report.main(["--quick"] if args.quick else [])
    print(f"\nbench/run{' --quick' if args.quick else ''}: {wall:.0f} s")
    for name, status in statuses.items():
        print(f"  {name}: {status}")
    return code or (1 if any(not s.startswith(("ok", "not run")) for s in statuses.values()) else 0)


if __name__ == "__main__":
    sys.exit(main())
