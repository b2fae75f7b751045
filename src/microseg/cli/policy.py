"""Offline policy commands: validate, render, matrix, diff (explain lives in its own module)."""

from __future__ import annotations

from collections import Counter, defaultdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from microseg import errors, settings
from microseg.cli import lint, loading, output, ports, remote
from microseg.engine import engine, invariants, reachability
from microseg.model import estate
from microseg.render import iptables, nftables


def validate(
    files: output.Files = None, example: loading.Example = False, fmt: output.Output = output.Format.TABLE
) -> None:
    """Load and check policy files: every problem at once with file, line and field; then the
    invariants the files declare (exit 1 when the policy breaks one other than by a quarantine)."""
    est = loading.load(files, example=example)
    eng = engine.PolicyEngine(est)
    counts = summary_counts(est)
    broken = invariants.Guard(eng).check()
    linted = lint.warnings(eng, files, example=example)  # warnings only: `lint --strict` fails on them
    if fmt is output.Format.JSON:
        output.emit_json(
            {
                "valid": True,
                "counts": counts,
                "warnings": eng.problems,
                "lint": linted,
                "invariants": {"declared": len(est.invariants), "violations": [v.to_dict() for v in broken]},
                "firstStart": output.first_start(est.workloads),
            }
        )
    else:
        output.console.print("[green]valid[/]: " + output.counted(counts))
        for problem in eng.problems:
            output.console.print(f"[yellow]warning[/]: {problem}")
        lint.print_warnings(linted)
        output.print_first_start(output.first_start(est.workloads))
        for violation in broken:
            shown = "[yellow]quarantine[/]" if violation.quarantine else "[red]broken[/]"
            output.console.print(f"{shown}: {violation}", highlight=False)
        if est.invariants and not broken:
            output.console.print(f"[green]kept[/]: {output.plural(len(est.invariants), 'invariant')}")
    if any(not v.quarantine for v in broken):  # as the server: a quarantine alone refuses nothing
        raise typer.Exit(1)


def summary_counts(est: estate.Estate) -> dict[str, int]:
    """How many of each kind an estate holds."""
    return {
        "workloads": len(est.workloads),
        "label rules": len(est.label_rules),
        "ip lists": len(est.ip_lists),
        "services": len(est.services),
        "tiers": len(est.tiers),
        "rules": len(est.rules),
        "invariants": len(est.invariants),
    }


class RenderFormat(StrEnum):
    """What `render` produces."""

    NFTABLES = "nftables"
    IPTABLES = "iptables"
    JSON = "json"


def render(
    workload: Annotated[str, typer.Option("--workload", "-w", help="workload to render the ruleset of")],
    files: output.Files = None,
    example: loading.Example = False,
    target: Annotated[RenderFormat, typer.Option("--format", help="what to print")] = RenderFormat.NFTABLES,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Print a workload's ruleset: the JSON document, or what the agent would load."""
    doc = loading.build(files, example=example).document(workload)
    render_settings = settings.Settings.from_env().render
    if target is RenderFormat.JSON:
        output.emit_json(doc.to_dict())
        return
    if target is RenderFormat.NFTABLES:
        nft = nftables.render(doc, render_settings)
        texts, warnings = {"nftables": nft.text}, nft.warnings
    else:
        ipt = iptables.render(doc, render_settings)
        texts = {"ipset": ipt.ipset, "iptables": ipt.v4_install, "ip6tables": ipt.v6_install}
        warnings = ipt.warnings
    if fmt is output.Format.JSON:
        output.emit_json({**texts, "hash": doc.hash, "warnings": list(warnings)})
        return
    for name, text in texts.items():
        if len(texts) > 1:
            output.console.print(f"# --- {name} ---")
        output.console.print(text, markup=False)
    for warning in warnings:
        output.err_console.print(f"warning: {warning}")


def matrix(
    files: output.Files = None,
    example: loading.Example = False,
    group_by: Annotated[str, typer.Option("--group-by", help="label keys that form groups")] = "env,app,role",
    port: Annotated[
        list[str] | None,
        typer.Option("--port", help=f"{ports.HELP} (repeatable; default: every port rules name)"),
    ] = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Reachability between label groups: which ports each group reaches in each other group."""
    eng = loading.build(files, example=example)
    keys = tuple(k.strip() for k in group_by.split(",") if k.strip())
    probes = matrix_probes(port, eng) if port else reachability.probes_of(eng)
    cells = reachability.matrix(eng, keys, probes)
    rows = matrix_rows(cells)
    if fmt is output.Format.JSON:
        output.emit_json(
            {"groupBy": list(keys), "probes": [reachability.probe_text(p) for p in probes], "cells": rows}
        )
        return
    output.console.print(matrix_table(rows))


MATRIX_PROBES = 1024
"""Ports `matrix` probes at most: each is a column of every cell."""


def matrix_probes(texts: list[str], eng: engine.PolicyEngine) -> list[reachability.Probe]:
    """The probes the `--port` options name, without repeats; too many is an error, not a wall."""
    found = list(dict.fromkeys(p for text in texts for p in ports.probes(text, eng.estate)))
    if len(found) > MATRIX_PROBES:
        too_many = f"--port names {len(found)} ports; matrix probes {MATRIX_PROBES} at most"
        raise errors.ValidationError(too_many, "port")
    return found


def matrix_rows(cells: dict[tuple[str, str], reachability.Cell]) -> list[dict[str, Any]]:
    """Cells as JSON-ready rows."""
    return [
        {
            "from": src,
            "to": dst,
            "pairs": cell.pairs,
            "all": [p for p in cell.allowed if cell.state(p) == "all"],
            "some": [p for p in cell.allowed if cell.state(p) == "some"],
        }
        for (src, dst), cell in cells.items()
    ]


def matrix_table(rows: list[dict[str, Any]]) -> Table:
    """Only reachable group pairs, one row each."""
    table = Table(title="Allowed by policy between label groups (pairs of distinct workloads)")
    for col in ("from", "to", "reaches (every pair)", "reaches (some pairs)"):
        table.add_column(col)
    for row in rows:
        if row["all"] or row["some"]:
            table.add_row(row["from"], row["to"], ", ".join(row["all"]), ", ".join(row["some"]))
    return table


def diff(
    ctx: typer.Context,
    *,
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--file", help="OLD then NEW policy (file or dir); none: the server's draft"),
    ] = None,
    old_files: Annotated[
        list[Path] | None,
        typer.Option("--old", help="the old policy: a file or directory (repeatable; with --new)"),
    ] = None,
    new_files: Annotated[
        list[Path] | None,
        typer.Option("--new", help="the new policy: a file or directory (repeatable; with --old)"),
    ] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="label keys for the summary")] = "env,app,role",
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Semantic diff: which workload pairs and ports gain or lose reachability, and why.

    Between two policies on disk: `--old A --old B --new C` (each side as many files or
    directories as it spans), or `-f OLD -f NEW`; with neither, the server's draft against its
    active version."""
    sides = diff_sides(files, old_files, new_files)
    if sides is None:
        remote.draft_diff(ctx, fmt is output.Format.JSON)
        return
    old, new = loading.load(sides[0]), loading.load(sides[1])
    old_eng, new_eng = engine.PolicyEngine(old), engine.PolicyEngine(new)
    probes = sorted(
        set(reachability.probes_of(old_eng)) | set(reachability.probes_of(new_eng)),
        key=lambda p: (p[0].value, p[1] or 0),
    )
    changes = reachability.semantic_diff(old_eng, new_eng, probes)
    rules_changed = estate.rule_changes(old, new)
    if fmt is output.Format.JSON:
        output.emit_json({"rules": rules_changed, "reachability": [change_json(c) for c in changes]})
        return
    print_diff(rules_changed, changes, new_eng, tuple(group_by.split(",")))


def diff_sides(
    files: list[Path] | None, old: list[Path] | None, new: list[Path] | None
) -> tuple[list[Path], list[Path]] | None:
    """(old paths, new paths) from `--old`/`--new` or two `-f`; None for the server's draft."""
    if files and (old or new):
        raise errors.UserError("give -f OLD -f NEW or --old ... --new ..., not both")
    if files:
        if len(files) != 2:
            raise errors.UserError(
                "diff -f takes exactly two: the old policy, then the new one "
                "(for several files per side: --old A --old B --new C)"
            )
        return [files[0]], [files[1]]
    if bool(old) != bool(new):
        raise errors.UserError("diff needs both sides: --old for the old policy and --new for the new one")
    return (old, new) if old and new else None


def change_json(change: reachability.Change) -> dict[str, object]:
    """One reachability change for `-o json`."""
    return {
        "from": change.source,
        "to": change.destination,
        "port": change.probe,
        "before": change.before.to_dict(),
        "after": change.after.to_dict(),
        "change": "gained" if change.gained else "lost",
    }


def print_diff(
    rules_changed: dict[str, list[str]],
    changes: list[reachability.Change],
    eng: engine.PolicyEngine,
    keys: tuple[str, ...],
) -> None:
    """Rule-level changes, then reachability changes grouped by label groups."""
    con = output.console
    for kind, refs in rules_changed.items():
        for ref in refs:
            con.print(f"rule {kind}: {ref}")
    if not changes:
        con.print("no reachability change between known workloads")
        return
    grouped: dict[tuple[str, str, str, str, str], list[reachability.Change]] = defaultdict(list)
    for c in changes:
        src_group = reachability.group_of(eng, c.source, keys)
        dst_group = reachability.group_of(eng, c.destination, keys)
        because = c.after.rule or c.before.rule or "default deny"
        key = (src_group, dst_group, c.probe, "gained" if c.gained else "lost", because)
        grouped[key].append(c)
    pairs = output.plural(len(changes), "workload pair x port", "workload pairs x ports")
    table = Table(title=f"Reachability changes ({pairs})")
    for col in ("change", "from group", "to group", "port", "pairs", "because of", "example"):
        table.add_column(col)
    for (src, dst, probe, kind, ref), items in sorted(grouped.items()):
        style = "green" if kind == "gained" else "red"
        example = f"{items[0].source} -> {items[0].destination}"
        table.add_row(f"[{style}]{kind}[/]", src, dst, probe, str(len(items)), ref, example)
    con.print(table)
    totals = Counter("gained" if c.gained else "lost" for c in changes)
    con.print(f"{totals['gained']} gained, {totals['lost']} lost")
