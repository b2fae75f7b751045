"""`microseg validate` says which workloads block or alert from their first agent start (issue 16):
someone about to install agents on hosts already in git learns it before default deny reaches DNS,
NTP or admin SSH. Unset modes are visibility and are not counted; unmanaged devices have no agent."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from microseg.cli import main

runner = CliRunner()


def workload(name: str, spec: str, labels: str = "{env: dev}") -> str:
    return f"apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {name}, labels: {labels}}}\nspec: {spec}\n"


def tree(tmp_path: Path, *docs: str) -> str:
    path = tmp_path / "workloads.yaml"
    path.write_text("---\n".join(docs))
    return str(path)


def test_validate_counts_the_workloads_that_enforce_and_alert_from_their_first_start(tmp_path: Path) -> None:
    files = tree(
        tmp_path,
        *(workload(f"dns-{i:02}", f"{{addresses: [10.20.0.{i}], mode: enforce}}") for i in range(1, 13)),
        workload("ntp-1", "{addresses: [10.20.1.1], mode: alert}"),
        workload("ssh-1", "{addresses: [10.20.1.2]}"),
        workload("seen-1", "{addresses: [10.20.1.3], mode: visibility}"),
        workload("old-1", "{kind: unmanaged, addresses: [10.30.0.0/24], mode: enforce}"),
    )
    result = runner.invoke(main.app, ["validate", "-f", files])
    assert result.exit_code == 0, result.output
    names = ", ".join(f"dns-{i:02}" for i in range(1, 11))
    assert f"12 workloads will enforce from their first agent start: {names}, … (2 more)" in result.output
    assert "1 workload will alert from their first agent start: ntp-1" in result.output
    result = runner.invoke(main.app, ["validate", "-f", files, "-o", "json"])
    first = json.loads(result.output)["firstStart"]
    assert first == {"enforce": [f"dns-{i:02}" for i in range(1, 13)], "alert": ["ntp-1"]}


def test_validate_says_so_when_nothing_enforces_from_its_first_start(tmp_path: Path) -> None:
    files = tree(tmp_path, workload("ssh-1", "{addresses: [10.20.1.2]}"))
    result = runner.invoke(main.app, ["validate", "-f", files])
    assert "0 workloads will enforce from their first agent start" in result.output
    assert "will alert" not in result.output
    result = runner.invoke(main.app, ["validate", "-f", files, "-o", "json"])
    assert json.loads(result.output)["firstStart"] == {"enforce": [], "alert": []}
