"""The `microseg` command as a user runs it: exit codes, human output and `-o json` contracts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli import loading, main
from microseg.engine import engine
from microseg.model import selectors

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(main.app, list(args))
    return result.exit_code, result.output


def first(eng: engine.PolicyEngine, text: str) -> str:
    selector = selectors.LabelSelector.parse(text)
    return next(n for n in eng.workload_names() if selector.matches(eng.effective_labels(n)))


@pytest.fixture(scope="module")
def eng() -> engine.PolicyEngine:
    return loading.build(None, example=True)


def test_validate_examples() -> None:
    code, out = invoke("validate", "--example", "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    assert data["valid"] is True and data["counts"]["workloads"] >= 10


def test_validate_checks_invariants_and_fails_when_one_is_broken(tmp_path: Path) -> None:
    code, out = invoke("validate", "--example")
    assert code == 0 and "kept: 2 invariants" in out
    tree = tmp_path / "estate"
    shutil.copytree(loading.examples_dir(), tree)
    extra = tree / "policies" / "oops.yaml"
    extra.write_text(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: oops}\nspec:\n  tier: security\n  rules:\n"
        "    - {name: oops, priority: 1, action: allow, from: any, to: [{selector: role=db}], services: [ssh]}\n"
    )
    code, out = invoke("validate", "-f", str(tree))
    assert code == 1
    assert "broken: invariant only-bastion-ssh" in out and "allowed by security/oops" in out
    code, out = invoke("validate", "-f", str(tree), "-o", "json")
    found = json.loads(out)["invariants"]
    assert code == 1 and found["declared"] == 2
    assert {v["invariant"] for v in found["violations"]} == {"only-bastion-ssh", "dev-never-reaches-prod"}


def test_validate_reports_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w1}\n"
        "spec: {kind: vm, addresses: [10.77.0.300]}\n"
    )
    result = runner.invoke(main.app, ["validate", "-f", str(bad)])
    assert result.exit_code == 2
    message = (
        str(result.exception) if result.exception and not isinstance(result.exception, SystemExit) else ""
    )
    text = result.output + message
    assert "bad.yaml:4" in text and "addresses" in text


def test_console_script_reports_user_errors_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: microseg.io/v1\nkind: Nonsense\nmetadata: {name: x}\n")
    proc = subprocess.run([sys.executable, "-m", "microseg", "validate", "-f", str(bad)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "bad.yaml:2" in proc.stderr and "Traceback" not in proc.stderr


def test_explain_json_names_rule_tier_and_labels(eng: engine.PolicyEngine) -> None:
    dev, db = first(eng, "env=dev,role=web"), first(eng, "env=prod,role=db")
    code, out = invoke("explain", "--example", "--from", dev, "--to", db, "--port", "3306/tcp", "-o", "json")
    assert code == 0, out
    verdict = json.loads(out)["verdict"]
    assert verdict["outcome"] == "blocked" and verdict["tier"] == "security"
    assert "env=dev" in verdict["sourceLabelsMatched"] and "env=prod" in verdict["destinationLabelsMatched"]


def test_explain_default_deny_in_words(eng: engine.PolicyEngine) -> None:
    web, db = first(eng, "env=prod,role=web"), first(eng, "env=prod,role=db")
    code, out = invoke("explain", "--example", "--from", web, "--to", db, "--port", "2222/tcp")
    assert code == 0
    assert "default deny" in out and "blocked" in out


def test_render_json_is_the_document(eng: engine.PolicyEngine) -> None:
    db = first(eng, "env=prod,role=db")
    code, out = invoke("render", "--example", "--workload", db, "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["schema"] == "microseg.io/ruleset/v1" and doc["hash"] == eng.document(db).hash


@pytest.mark.parametrize("target", ["nftables", "iptables"])
def test_render_dataplane_text(eng: engine.PolicyEngine, target: str) -> None:
    db = first(eng, "env=prod,role=db")
    code, out = invoke("render", "--example", "--workload", db, "--format", target, "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    text = data["nftables"] if target == "nftables" else data["iptables"]
    assert "application/" in text  # every rule carries its rule reference


def test_matrix_json(eng: engine.PolicyEngine) -> None:
    code, out = invoke("matrix", "--example", "--group-by", "env,role", "--port", "3306/tcp", "-o", "json")
    assert code == 0, out
    cells = {(c["from"], c["to"]): c for c in json.loads(out)["cells"]}
    assert "3306/tcp" in cells[("env=prod,role=app", "env=prod,role=db")]["all"]
    assert "3306/tcp" not in cells[("env=prod,role=web", "env=prod,role=db")]["all"]
    assert "3306/tcp" not in cells[("env=dev,role=app", "env=prod,role=db")]["all"]


def test_diff_shows_semantic_change(tmp_path: Path, eng: engine.PolicyEngine) -> None:
    old = tmp_path / "old"
    shutil.copytree(loading.examples_dir(), old)
    new = tmp_path / "new"
    shutil.copytree(loading.examples_dir(), new)
    (new / "zz-open-ssh.yaml").write_text(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: open-ssh}\nspec:\n  tier: application\n"
        "  rules:\n    - name: web-ssh-to-db\n      priority: 9999\n      action: allow\n"
        "      from: [{selector: 'env=prod,role=web'}]\n      to: [{selector: 'env=prod,role=db'}]\n"
        "      services: [{port: 22, protocol: tcp}]\n"
    )
    code, out = invoke("diff", "-f", str(old), "-f", str(new), "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    assert data["rules"]["added"] == ["application/web-ssh-to-db"]
    web, db = first(eng, "env=prod,role=web"), first(eng, "env=prod,role=db")
    gained = {(c["from"], c["to"], c["port"]) for c in data["reachability"] if c["change"] == "gained"}
    assert (web, db, "22/tcp") in gained
    assert all(c["change"] == "gained" for c in data["reachability"])


def test_demo_runs_every_step() -> None:
    code, out = invoke("demo", "--offline")
    assert code == 0, out
    for n in range(1, 5):
        assert f"step {n}" in out
    assert "table inet microseg" in out and "default deny" in out


def test_demo_json() -> None:
    code, out = invoke("demo", "--offline", "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    outcomes = [f["verdict"]["outcome"] for f in data["flows"]]
    assert outcomes[0] == "allowed" and outcomes[-1] == "blocked"
    assert data["flows"][-1]["verdict"]["rule"] == "quarantine/isolate-out"
    assert data["ruleset"]["nftables"].startswith("table inet microseg")
