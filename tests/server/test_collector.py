"""The serving process's garbage collector (server/collector): full collections stay rare while
long-lived objects pile up, the app's objects are frozen, and /metrics tells what full collections
cost. Each collector setting is tried in a fresh interpreter: the collector is process-wide, and
the test process's own must stay as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from microseg.store import database
from tests.server import processes
from tests.server.test_replicas import admin_token

CHURN = """
import gc, sys
from microseg.server import collector
if sys.argv[1] == "tuned":
    collector.tune()
else:
    collector.watch()
# what a fan-out does to the heap: every parked poll answered and parked again with new
# long-lived objects, the old ones dropped (here: 100,000 small cycles a round, kept alive)
kept = []
for round in range(3):
    kept = [[{"poll": i, "round": round}] for i in range(100_000)]
    for item in kept:
        item.append(item)
print(collector.PAUSES.count)
"""


def _full_collections(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_long_lived_objects_piling_up_rarely_cause_a_full_collection() -> None:
    default, tuned = _full_collections("default"), _full_collections("tuned")
    assert default >= 3, "the churn no longer provokes CPython's default collector: the test proves nothing"
    assert tuned <= 1 < default


def test_serving_process_freezes_its_start_up_objects_and_reports_full_collections(tmp_path: Path) -> None:
    url = database.sqlite_url(tmp_path / "data")
    token = admin_token(url)
    with processes.server(url, tmp_path / "server.log") as base:
        text = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30).text
    samples = [line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#")]
    figures = {name: float(value) for name, _, value in samples}
    assert figures["microseg_gc_frozen_objects"] > 10_000  # the modules, routes and models at least
    assert figures["microseg_gc_full_collection_seconds_count"] >= 0
    assert figures["microseg_gc_full_collection_seconds_sum"] >= 0
    assert "microseg_gc_full_collection_longest_seconds" in figures
