"""Output people can read (issue 16, items 14 and 15), offline: piped tables are never cut, help
shows what was written (no Rich markup eating `[k8s]`, no `<str>`/`<bool>` types), `--version`,
`diff` with several files per side, plurals, RFC 3339 times. The commands against a server are in
tests/server/test_cli_readable.py."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import typer.core
from rich.table import Table
from typer.testing import CliRunner, Result

from microseg import __version__
from microseg.cli import main, output

LONG = "customer-relationship-management-frontend-with-a-long-name"
ESTATE = f"""\
apiVersion: microseg.io/v1
kind: Workload
metadata: {{name: web-1, labels: {{env: production, app: {LONG}, role: web}}}}
spec: {{kind: vm, addresses: [10.9.0.1], mode: enforce}}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {{name: db-1, labels: {{env: production, app: {LONG}, role: database}}}}
spec: {{kind: vm, addresses: [10.9.0.2], mode: enforce}}
"""
POLICY = """\
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-to-db}
spec:
  tier: application
  rules:
    - {name: web-to-database-on-postgres, priority: 100, action: allow, from: [{selector: role=web}],
       to: [{selector: role=database}], services: [{port: 5432}]}
"""
MORE = """\
    - {name: web-to-database-on-mysql, priority: 110, action: allow, from: [{selector: role=web}],
       to: [{selector: role=database}], services: [{port: 3306}]}
"""


def run(*args: str, columns: int = 60) -> Result:
    return CliRunner().invoke(main.app, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The estate in three files: inventory, the policy, and the policy with one more rule."""
    (tmp_path / "inventory.yaml").write_text(ESTATE)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "policy-next.yaml").write_text(POLICY + MORE)
    (tmp_path / "both.yaml").write_text(ESTATE + "---\n" + POLICY)
    return tmp_path


# --- piped tables -----------------------------------------------------------------------------------


def test_a_piped_table_keeps_every_name_whole_at_any_terminal_width(tree: Path) -> None:
    found = run("matrix", "-f", str(tree / "both.yaml"), "--group-by", "env,app,role", columns=40)
    assert found.exit_code == 0, found.output
    assert "…" not in found.stdout
    assert f"env=production,app={LONG},role=web" in found.stdout
    assert "5432/tcp" in found.stdout


def test_on_a_terminal_a_table_still_fits_the_window() -> None:
    screen = io.StringIO()
    console = output.ReadableConsole(file=screen, force_terminal=True, width=40, color_system=None)
    table = Table("name")
    table.add_row(LONG)
    console.print(table)
    assert max(len(line) for line in screen.getvalue().splitlines()) <= 40


def test_a_piped_table_is_as_wide_as_it_needs_and_no_wider() -> None:
    piped = io.StringIO()
    console = output.ReadableConsole(file=piped, width=40)
    table = Table("name")
    table.add_row(LONG)
    console.print(table)
    console.print("after")
    lines = piped.getvalue().splitlines()
    assert LONG in piped.getvalue() and max(map(len, lines)) == len(LONG) + 4  # borders and padding
    assert console.width == 40  # the next thing printed fits the terminal again


# --- help ---------------------------------------------------------------------------------------------


def every_command() -> list[list[str]]:
    """The path of every command and group, the root included."""
    root = typer.main.get_command(main.app)
    ctx = typer.Context(root)
    found: list[list[str]] = [[]]
    pending: list[tuple[list[str], typer.core.TyperGroup]] = [([], root)]  # type: ignore[list-item]
    while pending:
        path, group = pending.pop()
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            found.append([*path, name])
            if isinstance(sub, typer.core.TyperGroup):
                pending.append(([*path, name], sub))
    return found


@pytest.mark.parametrize("path", every_command(), ids=lambda p: " ".join(p) or "microseg")
def test_help_names_no_python_types(path: list[str]) -> None:
    found = run(*path, "--help", columns=200)
    assert found.exit_code == 0, found.output
    assert not re.search(r"<(str|bool|int|float|datetime|Path|list\[[^>]*\])>", found.stdout), found.stdout


def test_brackets_in_help_are_shown_as_written() -> None:
    found = run("k8s", "export", "--help", columns=200)
    assert "needs microseg[k8s]" in " ".join(found.stdout.split())


def test_flags_take_no_metavar_and_choices_are_listed() -> None:
    found = run("explain", "--help", columns=200)
    assert re.search(r"--example\s+use the example", found.stdout), found.stdout
    assert "--expect [allowed|blocked|would-block]" in found.stdout
    assert "--port PORT" in found.stdout and "-o, --output [table|json]" in found.stdout


# --- --version ---------------------------------------------------------------------------------------


def test_version_is_an_option_and_still_a_command() -> None:
    assert run("--version").stdout.strip() == __version__
    assert run("--version").exit_code == 0
    assert run("version").stdout.strip() == __version__


# --- diff with several files per side -------------------------------------------------------------


def test_diff_takes_several_files_per_side(tree: Path) -> None:
    inventory, old, new = (str(tree / n) for n in ("inventory.yaml", "policy.yaml", "policy-next.yaml"))
    found = run("diff", "--old", inventory, "--old", old, "--new", inventory, "--new", new, "-o", "json")
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert answer["rules"]["added"] == ["application/web-to-database-on-mysql"]
    assert {(c["port"], c["change"]) for c in answer["reachability"]} == {("3306/tcp", "gained")}


def test_diff_with_two_files_still_works(tree: Path) -> None:
    (tree / "next-both.yaml").write_text(ESTATE + "---\n" + POLICY + MORE)
    found = run("diff", "-f", str(tree / "both.yaml"), "-f", str(tree / "next-both.yaml"))
    assert found.exit_code == 0 and "rule added: application/web-to-database-on-mysql" in found.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("-f", "both.yaml", "--old", "policy.yaml", "--new", "policy.yaml"), "not both"),
        (("--old", "policy.yaml"), "both sides"),
        (("--new", "policy.yaml"), "both sides"),
        (("-f", "both.yaml"), "exactly two"),
        (("-f", "both.yaml", "-f", "both.yaml", "-f", "both.yaml"), "--old A --old B --new C"),
    ],
)
def test_diff_sides_given_wrongly_exit_2(tree: Path, args: tuple[str, ...], said: str) -> None:
    found = CliRunner().invoke(main.app, ["diff", *args], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert found.exit_code == 2 and said in found.stderr, found.output


# --- plurals and times ------------------------------------------------------------------------------


def test_counts_of_one_are_singular(tree: Path) -> None:
    (tree / "one.yaml").write_text(ESTATE.split("---", maxsplit=1)[0])
    found = run("validate", "-f", str(tree / "one.yaml"), columns=200)
    assert found.exit_code == 0, found.output
    assert "valid: 1 workload, 0 label rules" in found.stdout and "1 workloads" not in found.stdout


def test_k8s_reachability_counts_one_namespace_in_the_singular(tmp_path: Path) -> None:
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, labels: {app: a}}\n"
        "spec: {containers: [{name: a, image: x, ports: [{containerPort: 80}]}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop, labels: {app: b}}\n"
        "spec: {containers: [{name: b, image: x, ports: [{containerPort: 80}]}]}\n"
    )
    found = run("k8s", "reachability", "-f", str(manifest), columns=200)
    assert found.exit_code == 0, found.output
    assert "2 pods in 1 namespace, 0 NetworkPolicies: 2 of 2 connections allowed" in found.stdout


@pytest.mark.parametrize(
    ("epoch", "text"),
    [(0, "1970-01-01T00:00:00Z"), (1_796_637_600.75, "2026-12-07T10:00:00Z"), (None, "-")],
)
def test_times_are_rfc_3339_in_utc(epoch: float | None, text: str) -> None:
    assert output.timestamp(epoch) == text


@pytest.mark.parametrize(("count", "text"), [(0, "0 policies"), (1, "1 policy"), (2, "2 policies")])
def test_plural_takes_an_irregular_form(count: int, text: str) -> None:
    assert output.plural(count, "policy", "policies") == text
