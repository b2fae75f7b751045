"""CI cannot skip quietly: the rules of tests/conftest.py, run on small throw-away test files in a
pytest of their own (so a rule that broke would show here, not just stop failing elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest
from tests.conftest import require, require_root

def test_direct_skip():
    pytest.skip("no reason at all")

@pytest.mark.skip(reason="marked")
def test_marked_skip():
    pass

def test_require():
    require(False, "needs a thing")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    assert True
"""

UNMARKED_ROOT = """
from tests.conftest import require_root

def test_needs_root_without_saying_so():
    require_root("needs root")
"""


def run(tmp_path: Path, body: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(body)
    clean = {k: v for k, v in os.environ.items() if k not in {"CI", "MICROSEG_UPDATE_GOLDEN"}}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.conftest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rA",
        *args,
    ]
    return subprocess.run(
        [*command, "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_sample.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
    )


def test_outside_ci_skips_are_skips(tmp_path: Path) -> None:
    done = run(tmp_path, SKIPPING, {})
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in done.stdout


@pytest.mark.parametrize("value", ["true", "1", "True", "yes"])
def test_under_ci_every_skip_fails_whatever_spelling_of_ci(tmp_path: Path, value: str) -> None:
    done = run(tmp_path, SKIPPING, {"CI": value})
    assert done.returncode == 1, done.stdout
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout
    assert "1 passed, 1 xfailed" in done.stdout.splitlines()[-1], done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    for name in ("test_direct_skip", "test_marked_skip", "test_require"):
        assert any(f"test_sample.py::{name}" in line for line in failed), done.stdout


def test_under_ci_golden_files_cannot_be_rewritten(tmp_path: Path) -> None:
    by_env = run(tmp_path, "def test_x():\n    pass\n", {"CI": "true", "MICROSEG_UPDATE_GOLDEN": "1"})
    by_flag = run(tmp_path, "def test_x():\n    pass\n", {"CI": "true"}, "--update-golden")
    for done in (by_env, by_flag):
        assert done.returncode == 4, done.stdout + done.stderr
        assert "golden files cannot be rewritten under CI" in done.stderr


def test_a_test_needing_root_must_carry_a_root_marker(tmp_path: Path) -> None:
    done = run(tmp_path, UNMARKED_ROOT, {})
    assert done.returncode == 1, done.stdout
    assert "carries none of the markers" in done.stdout


def test_the_allowlist_names_tests_that_exist() -> None:
    from tests.conftest import CI_MAY_SKIP

    for node in CI_MAY_SKIP:
        path, name = node.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), node
