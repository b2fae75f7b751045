"""`microseg lint`: warnings with file and line, `--strict` for CI, `-o json` for scripts; the same
warnings in `validate`, which still passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from tests.engine.shop_estate import EXPECTED, SHOP


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(main.app, list(args))
    return done.exit_code, done.stdout


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.yaml").write_text(SHOP)
    return tmp_path


def line_of(text: str, needle: str) -> int:
    [found] = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return found


def test_lint_warns_and_passes_without_strict(shop: Path) -> None:
    code, out = run("lint", "-f", str(shop))
    assert code == 0, out
    assert "did you mean role=cache?" in out and f"{len(EXPECTED)} warnings" in out


@pytest.mark.parametrize(("args", "code"), [([], 0), (["--strict"], 1)], ids=["plain", "strict"])
def test_strict_makes_warnings_fail(shop: Path, args: list[str], code: int) -> None:
    assert run("lint", "-f", str(shop), *args)[0] == code


def test_strict_passes_a_clean_estate() -> None:
    code, out = run("lint", "--example", "--strict")
    assert (code, out.strip()) == (0, "no warnings")


def test_json_gives_every_finding_with_kind_name_file_and_line(shop: Path) -> None:
    code, out = run("lint", "-f", str(shop), "-o", "json", "--strict")
    assert code == 1
    found = json.loads(out)
    assert found["count"] == len(EXPECTED) == len(found["warnings"])
    assert {(w["kind"], w["name"]) for w in found["warnings"]} == EXPECTED
    by_name = {(w["kind"], w["name"]): w for w in found["warnings"]}
    cache = by_name[("selector-matches-nothing", "application/web-to-cache")]
    assert (cache["file"], cache["line"], cache["path"]) == (
        str(shop / "shop.yaml"), line_of(SHOP, '"rol=cache"'), "spec.rules[3].to",
    )  # fmt: skip
    redundant = by_name[("redundant", "application/web-to-db-again")]
    assert (redundant["line"], redundant["path"]) == (
        line_of(SHOP, "- name: web-to-db-again"),
        "spec.rules[2]",
    )
    ftp = by_name[("unused-service", "legacy-ftp")]
    assert ftp["line"] == line_of(SHOP, "{name: legacy-ftp}")


LISTED = """\
apiVersion: microseg.io/v1
kind: List
items:
  - apiVersion: microseg.io/v1
    kind: Service
    metadata: {name: used}
    spec: {ports: [{port: 80}]}
  - apiVersion: microseg.io/v1
    kind: Service
    metadata: {name: spare}
    spec: {ports: [{port: 81}]}
"""
RULES = """\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: a, labels: {role: web}}
spec: {kind: vm, addresses: [10.1.0.1]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: b, labels: {role: db}}
spec: {kind: vm, addresses: [10.1.0.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: p}
spec:
  tier: application
  rules:
    - {name: r, priority: 1, action: allow, from: [{selector: role=web}], to: [{selector: role=db}], services: [used]}
"""


def test_findings_point_into_the_right_file_and_list_item(tmp_path: Path) -> None:
    (tmp_path / "a-services.yaml").write_text(LISTED)
    (tmp_path / "b-rules.yaml").write_text(RULES)
    code, out = run("lint", "-f", str(tmp_path), "-o", "json")
    assert code == 0, out
    [spare] = json.loads(out)["warnings"]
    assert (spare["name"], spare["file"], spare["line"], spare["path"]) == (
        "spare", str(tmp_path / "a-services.yaml"), 10, "items[1].metadata.name",
    )  # fmt: skip


def test_validate_prints_the_warnings_and_stays_valid(shop: Path) -> None:
    code, out = run("validate", "-f", str(shop))
    assert code == 0, out
    line = line_of(SHOP, '"rol=cache"')
    where = f"{shop / 'shop.yaml'}:{line} spec.rules[3].to"
    assert f"warning: {where}: selector rol=cache in `to` matches no workload" in out
    code, out = run("validate", "-f", str(shop), "-o", "json")
    assert code == 0 and {(w["kind"], w["name"]) for w in json.loads(out)["lint"]} == EXPECTED


def test_files_that_do_not_load_exit_2_with_a_json_result(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: microseg.io/v1\nkind: Nope\n")
    code, out = run("lint", "-f", str(tmp_path), "-o", "json")
    assert code == 2 and json.loads(out)["valid"] is False
