"""docs/security.md's threat model names the test that proves each line: every name it gives is a
test that exists, so a renamed or deleted test cannot leave a line unproven unseen."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _defined_tests() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        found |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), flags=re.M))
    return found


def _test_files() -> set[str]:
    return {p.name for p in (ROOT / "tests").rglob("test_*.py")}


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", text))
    assert len(named) > 40, "the threat model names the tests that prove it"
    assert named <= _defined_tests(), sorted(named - _defined_tests())


def test_every_test_module_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named = {Path(m).name for m in re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)`", text)}
    assert named and named <= _test_files(), sorted(named - _test_files())
