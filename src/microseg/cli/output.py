"""How commands print: Rich tables and text for people, `-o json` for scripts.

Every command takes `-o table|json`; JSON goes to stdout untouched by Rich so it can be piped.
Errors go to stderr with exit code 2 for user errors (see `microseg.errors`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import markup
from rich.console import Console

from microseg import errors
from microseg.model import workloads

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(StrEnum):
    """Output formats every command offers."""

    TABLE = "table"
    JSON = "json"


Output = Annotated[Format, typer.Option("-o", "--output", help="table for people, json for scripts")]
Files = Annotated[
    list[Path] | None,
    typer.Option("-f", "--file", help="policy file or directory (repeatable); required unless --example"),
]


def emit_json(data: Any) -> None:
    """Print JSON (sorted keys, indented) to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


SHOWN_NAMES = 10
"""Names a one-line summary shows before it says how many more there are."""


def first_start(found: Iterable[workloads.Workload]) -> dict[str, list[str]]:
    """`{"enforce": [...], "alert": [...]}`: the managed workloads in policy files that block or
    alert from the moment their first agent starts (their own mode, or a quarantine). A person
    installing agents on hosts already in git learns this before default deny reaches DNS or SSH."""
    return {mode.value: names for mode, names in workloads.first_start_modes(found).items()}


def print_first_start(first: dict[str, list[str]]) -> None:
    """One line for enforce (also when none will) and one for alert when some will."""
    for mode, names in first.items():
        if not names and mode != workloads.Mode.ENFORCE.value:
            continue
        count = f"{len(names)} workload{'' if len(names) == 1 else 's'}"
        said = f"{count} will {mode} from their first agent start"
        colour = "yellow" if names else "green"
        console.print(f"[{colour}]{said}[/]" + (f": {markup.escape(_some(names))}" if names else ""))


def _some(names: list[str]) -> str:
    """The first names, then how many more."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f", … ({more} more)" if more > 0 else "")


def fail(error: errors.MicrosegError) -> NoReturn:
    """Report an error a person can act on and exit (2 for user errors, 1 otherwise)."""
    err_console.print(f"[bold red]error:[/] {markup.escape(str(error))}", markup=True)
    raise typer.Exit(2 if isinstance(error, errors.UserError) else 1)


def reporting(command: Callable[..., None]) -> Callable[..., None]:
    """Turn microseg's own errors into a message on stderr and an exit code (2 for user errors);
    under `-o json` also into a JSON result on stdout, so a script never reads silence."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except errors.MicrosegError as exc:
            if str(kwargs.get("fmt", "")) == Format.JSON.value:
                emit_json(failure(exc))
            fail(exc)

    return run_command


def failure(error: errors.MicrosegError) -> dict[str, Any]:
    """The JSON result of a failed command: `valid: false`, the message, and every problem with
    file, line, field and message (one problem without a file when the error is not about one)."""
    if isinstance(error, errors.PolicyFileError) and error.problems:
        problems = [dataclasses.asdict(p) for p in error.problems]
    else:
        problems = [{"file": "", "line": 0, "field": getattr(error, "field", ""), "message": str(error)}]
    return {"valid": False, "error": str(error).splitlines()[0] if str(error) else type(error).__name__,
            "problems": problems}  # fmt: skip
