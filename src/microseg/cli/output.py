"""How commands print: Rich tables and text for people, `-o json` for scripts.

Every command takes `-o table|json`; JSON goes to stdout untouched by Rich so it can be piped.
Errors go to stderr with exit code 2 for user errors (see `microseg.errors`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from microseg import errors

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(StrEnum):
    """Output formats every command offers."""

    TABLE = "table"
    JSON = "json"


Output = Annotated[Format, typer.Option("-o", "--output", help="table for people, json for scripts")]
Files = Annotated[
    list[Path] | None,
    typer.Option("-f", "--file", help="policy file or directory (repeatable); default: the example estate"),
]


def emit_json(data: Any) -> None:
    """Print JSON (sorted keys, indented) to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def fail(error: errors.MicrosegError) -> NoReturn:
    """Report an error a person can act on and exit (2 for user errors, 1 otherwise)."""
    err_console.print(f"[bold red]error:[/] {error}", markup=True)
    raise typer.Exit(2 if isinstance(error, errors.UserError) else 1)


def reporting(command: Callable[..., None]) -> Callable[..., None]:
    """Turn microseg's own errors into a message on stderr and an exit code (2 for user errors)."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except errors.MicrosegError as exc:
            fail(exc)

    return run_command
