"""`microseg validate` on inputs that once crashed it or failed it for the wrong reason: YAML
nested hundreds of levels deep (a file:line problem, exit 2, no traceback), and a workload in
forensics quarantine (reported, but no broken invariant: exit 0, as the server provisions)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli import loading, main

HEAD = "apiVersion: microseg.io/v1\nkind: Tier\nmetadata: {name: deep}\nspec:\n  order: 900\n  description: "


def flow_style(depth: int) -> str:
    return HEAD + "[" * depth + "]" * depth + "\n"


def block_style(depth: int) -> str:
    return HEAD + "\n" + "".join("    " + "  " * i + "- \n" for i in range(depth))[:-1] + " x\n"


@pytest.mark.parametrize(
    "text", [flow_style(65), flow_style(950), block_style(900)], ids=["flow-65", "flow-950", "block-900"]
)
def test_deep_yaml_is_a_file_line_problem_without_a_traceback(tmp_path: Path, text: str) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "microseg", "validate", "-f", str(deep)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    assert "deep.yaml:" in proc.stderr and "nested deeper than 64 levels" in proc.stderr, proc.stderr


def test_a_quarantined_workload_is_reported_but_breaks_no_invariant(tmp_path: Path) -> None:
    tree = tmp_path / "estate"
    shutil.copytree(loading.examples_dir(), tree)
    (tree / "quarantined.yaml").write_text(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: infected-db\n"
        "  labels: {env: prod, role: db, quarantine: 'true'}\nspec: {kind: vm, addresses: [10.77.99.7]}\n"
    )
    result = CliRunner().invoke(main.app, ["validate", "-f", str(tree)])
    assert result.exit_code == 0, result.output
    assert "quarantine: invariant only-bastion-ssh" in result.output
    assert "quarantine in progress" in result.output and "broken:" not in result.output
    result = CliRunner().invoke(main.app, ["validate", "-f", str(tree), "-o", "json"])
    found = json.loads(result.output)["invariants"]["violations"]
    assert {v["rule"] for v in found} == {"quarantine/allow-forensics-in", "quarantine/allow-forensics-out"}
    assert all(v["quarantine"] for v in found)
