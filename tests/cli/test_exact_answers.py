"""Exact answers from the offline commands (issue 16): one `--port` parser for every command,
no implicit example estate, and a JSON result under `-o json` even when the command fails.

Every case runs the real Typer app and asserts the exit code: 0 answered, 1 `--expect` not met,
2 the input is wrong (with a message on stderr, never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from microseg.cli import main

SMALL = """\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web-1, labels: {env: prod, role: web}}
spec: {kind: vm, addresses: [10.9.0.1], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: api-1, labels: {env: prod, role: api}}
spec: {kind: vm, addresses: [10.9.0.2], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 8080}, {port: 9000, endPort: 9001}]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-to-api}
spec:
  tier: application
  rules:
    - {name: web-to-api, priority: 100, action: allow, from: [{selector: role=web}],
       to: [{selector: role=api}], services: [api]}
"""
ALLOWED_BY = "application/web-to-api"


def run(*args: str) -> Result:
    return CliRunner().invoke(main.app, list(args))


@pytest.fixture
def small(tmp_path: Path) -> Path:
    (tmp_path / "estate.yaml").write_text(SMALL)
    return tmp_path


def explain(estate: Path, port: str, *more: str) -> Result:
    return run("explain", "-f", str(estate), "--from", "web-1", "--to", "api-1", "--port", port, *more)


# --- one port parser -------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["8080", "8080/tcp", "tcp/8080", "TCP/8080", "8080/TCP", " 8080/tcp "])
def test_every_spelling_of_an_allowed_port_is_allowed(small: Path, port: str) -> None:
    result = explain(small, port, "-o", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["flow"]["port"] == "8080/tcp"
    assert answer["verdict"]["outcome"] == "allowed" and answer["verdict"]["rule"] == ALLOWED_BY


def test_a_service_name_is_every_port_of_the_estate_service(small: Path) -> None:
    result = explain(small, "api", "-o", "json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["verdicts"]
    assert [r["port"] for r in runs] == ["8080/tcp", "9000-9001/tcp"]
    assert all(r["verdict"]["rule"] == ALLOWED_BY for r in runs)


def test_a_range_is_explained_port_by_port_in_runs(small: Path) -> None:
    result = explain(small, "8079-8081/tcp", "-o", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    runs = [(r["port"], r["verdict"]["outcome"]) for r in answer["verdicts"]]
    assert runs == [("8079/tcp", "blocked"), ("8080/tcp", "allowed"), ("8081/tcp", "blocked")]
    assert "verdict" not in answer  # no single verdict stands for ports that differ


@pytest.mark.parametrize(
    ("port", "says"),
    [
        ("https", "neither a port nor a known service (services: api)"),
        ("80/foo", "unknown protocol 'foo'"),
        ("", "expected a port number"),
        ("0/tcp", "ports are 1-65535"),
        ("99999/tcp", "ports are 1-65535"),
        ("9000-80/tcp", "low <= high"),
        ("icmp/8", "icmp has no ports"),
    ],
    ids=[
        "unknown-service",
        "unknown-protocol",
        "empty",
        "port-0",
        "port-99999",
        "reversed-range",
        "icmp-port",
    ],
)
def test_a_bad_port_is_an_error_with_exit_2(small: Path, port: str, says: str) -> None:
    result = explain(small, port)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_matrix_reads_ports_with_the_same_parser(small: Path) -> None:
    answers = []
    for port in ("tcp/8080", "8080/tcp", "8080"):
        result = run("matrix", "-f", str(small), "--group-by", "role", "--port", port, "-o", "json")
        assert result.exit_code == 0, result.output
        answers.append(json.loads(result.stdout))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["probes"] == ["8080/tcp"]
    cell = next(c for c in answers[0]["cells"] if (c["from"], c["to"]) == ("role=web", "role=api"))
    assert cell["all"] == ["8080/tcp"]


def test_matrix_refuses_more_ports_than_it_can_show(small: Path) -> None:
    result = run("matrix", "-f", str(small), "--port", "1-65535/tcp")
    assert result.exit_code == 2 and "matrix probes 1024 at most" in result.stderr


# --- explain --expect ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "expect", "code"),
    [
        ("8080/tcp", "allowed", 0),
        ("8080/tcp", "blocked", 1),
        ("22/tcp", "blocked", 0),
        ("22/tcp", "allowed", 1),
        ("8079-8080/tcp", "allowed", 1),
        ("api", "allowed", 0),
    ],
    ids=[
        "allowed-as-expected",
        "allowed-not-blocked",
        "blocked-as-expected",
        "blocked-not-allowed",
        "range-partly-allowed",
        "service-all-allowed",
    ],
)
def test_expect_exits_1_on_a_mismatch(small: Path, port: str, expect: str, code: int) -> None:
    result = explain(small, port, "--expect", expect, "-o", "json")
    assert result.exit_code == code, result.output
    answer = json.loads(result.stdout)
    assert answer["expected"] == expect and answer["met"] is (code == 0)


def test_expect_mismatch_says_so_in_table_output(small: Path) -> None:
    result = explain(small, "8080/tcp", "--expect", "blocked")
    assert result.exit_code == 1
    assert "outcome   allowed" in result.stdout and "expected blocked" in result.stderr


# --- no implicit example estate --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["explain", "--from", "prod-web-1", "--to", "prod-db-1", "--port", "3306/tcp"],
        ["render", "--workload", "prod-db-1"],
        ["matrix"],
    ],
    ids=["validate", "explain", "render", "matrix"],
)
def test_no_file_is_an_error_not_the_example(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "no policy files: give -f" in result.stderr and "--example" in result.stderr
    assert run(*args, "--example").exit_code == 0


def test_example_and_files_together_are_refused(small: Path) -> None:
    result = run("validate", "--example", "-f", str(small))
    assert result.exit_code == 2 and "not both" in result.stderr


def test_an_empty_directory_does_not_validate(tmp_path: Path) -> None:
    empty = tmp_path / "policies"
    empty.mkdir()
    (empty / "README.md").write_text("not a policy file\n")
    result = run("validate", "-f", str(empty))
    assert result.exit_code == 2, result.output
    assert f"{empty}: no policy files" in result.stderr


def test_demo_offline_still_walks_through_the_example() -> None:
    result = run("demo", "--offline", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["workloads"] >= 10


# --- -o json on failure ----------------------------------------------------------------------------


def test_validate_json_reports_every_problem_with_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w1}\n"
        "spec: {kind: vm, addresses: [10.77.0.300]}\n"
    )
    result = run("validate", "-f", str(bad), "-o", "json")
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["valid"] is False and "nothing was loaded" in answer["error"]
    [problem] = answer["problems"]
    assert problem["file"] == str(bad) and problem["line"] == 4 and "addresses" in problem["field"]
    assert problem["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "-f", "/nonexistent/policies"],
        ["validate"],
        ["explain", "--example", "--from", "prod-web-1", "--to", "prod-db-1", "--port", "80/foo"],
        ["explain", "--example", "--from", "nobody", "--to", "prod-db-1", "--port", "80"],
        ["render", "--example", "--workload", "nobody"],
        ["matrix", "--example", "--port", "0/tcp"],
    ],
    ids=["missing-path", "no-file", "bad-port", "unknown-workload", "render-unknown", "matrix-bad-port"],
)
def test_every_json_command_prints_json_on_failure(args: list[str]) -> None:
    result = run(*args, "-o", "json")
    assert result.exit_code == 2, result.output
    answer = json.loads(result.stdout)
    assert answer["valid"] is False and answer["error"]
    assert all(set(p) == {"file", "line", "field", "message"} for p in answer["problems"])
    assert answer["problems"] and all(p["message"] for p in answer["problems"])
