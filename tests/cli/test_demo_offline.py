"""`microseg demo` where no lab can run: the offline walk-through, and a clear refusal otherwise.

The lab demo itself runs in tests/lab/test_demo.py (root only). Here: `--offline` needs nothing,
and without root (or off Linux, or with a lab already up) the demo says why and how, exits 2, and
makes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.lab import demo, options


def test_offline_walks_through_the_engine_without_touching_anything() -> None:
    result = CliRunner().invoke(main.app, ["demo", "--offline"])
    assert result.exit_code == 0, result.output
    assert "nothing on this machine was changed" in result.output


def test_offline_json_is_machine_readable() -> None:
    result = CliRunner().invoke(main.app, ["demo", "--offline", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["managedWorkloads"] > 0


@pytest.mark.parametrize(
    ("system", "uid", "expected"),
    [
        ("Linux", 1000, "needs root"),
        ("Darwin", 0, "needs Linux"),
    ],
    ids=["not-root", "not-linux"],
)
def test_preflight_says_why_the_lab_cannot_run(
    monkeypatch: pytest.MonkeyPatch, system: str, uid: int, expected: str
) -> None:
    monkeypatch.setattr(demo.platform, "system", lambda: system)
    monkeypatch.setattr(demo.os, "geteuid", lambda: uid)
    assert any(expected in problem for problem in demo.preflight())


def test_a_lab_that_is_up_is_never_taken_over(tmp_path: Path) -> None:
    opts = options.LabOptions(state_dir=str(tmp_path), prefix="ms-tdemo")
    (tmp_path / "state.json").write_text("{}")
    assert any("a lab is up" in problem for problem in demo.occupied(opts))


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is needed to drop root for this test")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_without_root_the_demo_says_how_and_exits_2(tmp_path: Path) -> None:
    command = [*_as_nobody(), sys.executable, "-m", "microseg", "demo", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs root" in done.stderr
    assert "sudo" in done.stderr and "--offline" in done.stderr
    assert not (tmp_path / "out").exists()
