"""`microseg demo` end to end on a lab of its own: every step passes, in under three minutes, the
map files are real (an HTML page with the drawing, a PNG), and nothing of the lab is left after.

Runs the demo's story exactly as `microseg demo` does (`lab.demo.run`), on a fresh prefix, state
directory and port (tests/lab/labs.py), so it never meets the default `ms-lab`. Needs root; under
CI=true it fails instead of skipping (tests/conftest.py). Never run it while another lab is up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from microseg.lab import demo, scorecard
from tests.conftest import require
from tests.lab import labs

pytestmark = pytest.mark.lab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Recorder:
    """A reporter that keeps what a person would have been told."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.progress: list[str] = []
        self.done: list[scorecard.StepResult] = []

    def on_step_started(self, number: int, title: str) -> None:
        self.started.append(number)

    def on_step_progress(self, text: str) -> None:
        self.progress.append(text)

    def on_step_done(self, result: scorecard.StepResult) -> None:
        self.done.append(result)


def test_the_demo_tells_the_whole_story_and_leaves_nothing(tmp_path: Path) -> None:
    labs.require_lab()
    require(
        shutil.which("dot") is not None, "the demo's map picture needs Graphviz (apt-get install graphviz)"
    )
    opts = labs.new_options(tmp_path)
    out = tmp_path / "out"
    reporter = Recorder()
    try:
        card = demo.run(demo.DemoOptions(out_dir=out, lab=opts), reporter)
    finally:
        leftovers = labs.leftovers(opts)
    failed = {s.title: [c for c in s.checks if not c.ok] for s in card.steps if not s.ok}
    assert card.ok, failed
    assert [s.number for s in card.steps] == list(range(9))  # the lab, seven steps, the clean-up
    assert reporter.started == [s.number for s in reporter.done] == list(range(9))
    assert card.seconds < 180
    assert leftovers == []
    page = (out / "demo-map.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "role=db" in page
    assert (out / "demo-map.png").read_bytes()[:8] == PNG_MAGIC
    assert not card.kept and card.token == ""  # the token is printed only for a kept lab
    as_json = card.to_json()
    assert as_json["ok"] and len(as_json["steps"]) == 9
