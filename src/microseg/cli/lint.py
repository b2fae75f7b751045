"""`microseg lint`: what the policy files say that they probably do not mean, with file and line.

The analysis is the engine's (`microseg.engine.lint`, findings by object name); where each object
was written comes from `microseg.policyfile.origins` (the files' documents keep the line of every
field), and this module prints `file:line field: message`. `validate` prints the same warnings
without failing on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import markup
from rich.table import Table

from microseg.cli import loading, output
from microseg.engine import engine
from microseg.engine import lint as linter
from microseg.policyfile import nodes, origins

Strict = Annotated[bool, typer.Option("--strict", help="exit 1 when there is any warning (for CI)")]


def located(findings: list[linter.Finding], found: origins.Origins) -> list[dict[str, Any]]:
    """Findings as JSON-ready dicts with `file`, `line` and `path` (empty and 0 when unknown)."""
    return [{**f.to_dict(), **_place(f, found.found.get(f"{f.obj}/{f.name}"))} for f in findings]


def _place(finding: linter.Finding, origin: origins.Origin | None) -> dict[str, Any]:
    """File, line and field path of a finding: its field (`from`, `to`), else the object (a rule's
    item in its Policy, or the object's name)."""
    if origin is None:
        return {"file": "", "line": 0, "path": ""}
    field = f"spec.{finding.field}" if finding.field else "metadata.name"
    if origin.rule:
        path = (*origin.base, finding.field) if finding.field else origin.base
    else:
        path = (*origin.base, *field.split("."))
    return {"file": origin.doc.file, "line": origin.line(field), "path": nodes.path_text(path)}


def warnings(eng: engine.PolicyEngine, files: list[Path] | None, *, example: bool) -> list[dict[str, Any]]:
    """The linter's findings for the policy files named (or the example), with file and line."""
    paths = [loading.examples_dir()] if example else list(files or [])
    found = located(linter.lint(eng), origins.Origins.read(paths))
    return sorted(found, key=lambda f: (not f["file"], f["file"], f["line"], f["kind"]))


def where_text(found: dict[str, Any]) -> str:
    """`file:line path` (or the object's name when it was not found in a file)."""
    if not found["file"]:
        return f"{found['object']} {found['name']}".strip()
    return f"{found['file']}:{found['line']} {found['path']}"


def print_warnings(found: list[dict[str, Any]]) -> None:
    """One line per finding, as `validate` prints its problems."""
    for f in found:
        hint = f" ({f['hint']})" if f["hint"] else ""
        said = markup.escape(f"{where_text(f)}: {f['message']}{hint} [{f['kind']}]")
        output.console.print(f"[yellow]warning[/]: {said}")


def lint(
    files: output.Files = None,
    example: loading.Example = False,
    strict: Strict = False,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Warn about what a policy probably does not mean: selectors matching no workload (with the
    closest labels in use), rules shadowed or made redundant by earlier ones, allows a deny above
    covers, rules no host enforces, unused IP lists and services, any-to-any allows.

    Exit 0 with warnings (1 with --strict), 2 when the files do not load."""
    eng = loading.build(files, example=example)
    found = warnings(eng, files, example=example)
    if fmt is output.Format.JSON:
        output.emit_json({"valid": True, "warnings": found, "count": len(found), "strict": strict})
    elif found:
        output.console.print(_table(found))
        output.console.print(f"{len(found)} warning{'' if len(found) == 1 else 's'}")
    else:
        output.console.print("[green]no warnings[/]")
    if strict and found:
        raise typer.Exit(1)


def _table(found: list[dict[str, Any]]) -> Table:
    table = Table(title="Lint warnings")
    for column in ("where", "kind", "warning"):
        table.add_column(column, overflow="fold")
    for f in found:
        hint = f"\n{f['hint']}" if f["hint"] else ""
        table.add_row(markup.escape(where_text(f)), f["kind"], markup.escape(f["message"] + hint))
    return table
