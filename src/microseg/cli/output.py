"""How commands print: Rich tables and text for people, `-o json` for scripts.

Every command takes `-o table|json`; JSON goes to stdout untouched by Rich so it can be piped.
Errors go to stderr with exit code 2 for user errors (see `microseg.errors`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from rich import markup
from rich.console import Console
from rich.measure import Measurement

from microseg import errors
from microseg.model import workloads

UNLIMITED = 1_000_000
"""Columns a renderable may take when nobody reads it on a terminal (it is measured, not padded)."""


class ReadableConsole(Console):
    """Rich's console, except that piped or redirected output (CI logs, `| less`, a file) is never
    cut: a table is printed at its natural width instead of squeezed into 80 columns with `…`.
    On a terminal it fits the window as usual. Plain strings already never wrap (`soft_wrap`)."""

    def print(self, *objects: Any, **options: Any) -> None:
        """As `Console.print`; off a terminal, as wide as the widest renderable needs."""
        if self.is_terminal or "width" in options:
            super().print(*objects, **options)
            return
        with self._as_wide_as(max((self._natural_width(o) for o in objects), default=0)):
            super().print(*objects, **options)

    def _natural_width(self, renderable: Any) -> int:
        if isinstance(renderable, str) or not hasattr(renderable, "__rich_measure__"):
            return 0  # text is printed unwrapped anyway
        return Measurement.get(self, self.options.update_width(UNLIMITED), renderable).maximum

    @contextmanager
    def _as_wide_as(self, needed: int) -> Iterator[None]:
        before = self._width  # None: follow the terminal (or COLUMNS) again afterwards
        self.width = max(self.width, needed)
        try:
            yield
        finally:
            self._width = before


console = ReadableConsole(highlight=False, soft_wrap=True)
err_console = ReadableConsole(stderr=True, highlight=False, soft_wrap=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 namespace`, `2 namespaces` (`nouns` where adding an s is wrong: `1 policy`, `2 policies`)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def counted(counts: dict[str, int]) -> str:
    """`1 workload, 0 label rules, 3 services` from counts keyed by plural nouns."""
    return ", ".join(plural(n, kind.removesuffix("s"), kind) for kind, n in counts.items())


def timestamp(epoch: float | None) -> str:
    """A time as RFC 3339 in UTC to the second (`2026-12-07T10:00:00Z`), `-` for none: what
    people paste into tickets and what `date -d` and every log tool read."""
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


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
        count = plural(len(names), "workload")
        said = f"{count} will {mode} from their first agent start"
        colour = "yellow" if names else "green"
        console.print(f"[{colour}]{said}[/]" + (f": {markup.escape(_some(names))}" if names else ""))


def _some(names: list[str]) -> str:
    """The first names, then how many more."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f", … ({more} more)" if more > 0 else "")


def plain_help(app: typer.Typer) -> None:
    """Help as written: no Rich markup in any group (it read `microseg[k8s]` as a style and
    printed `microseg`), so texts with brackets and backticks show as typed."""
    app.rich_markup_mode = None
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


def readable_metavars(command: typer.core.TyperGroup | typer.core.TyperCommand, ctx: typer.Context) -> None:
    """Metavars people read (`--port PORT`, `-o [table|json]`, nothing after a flag) instead of
    Typer's Python types (`<str>`, `<bool>`, `<list[Path]>`), for a command and all below it."""
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument) and not param.type_descriptor.is_choice:
            param.__class__ = _NamedArgument
        if param.metavar is None and isinstance(param, typer.core.TyperOption | typer.core.TyperArgument):
            param.metavar = _metavar(param, ctx)
    if isinstance(command, typer.core.TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if isinstance(sub, typer.core.TyperGroup | typer.core.TyperCommand):
                readable_metavars(sub, ctx)


class _NamedArgument(typer.core.TyperArgument):
    """An argument whose help shows its name (`NAME  the exception's name`) and not its type."""

    def display_type_rich(self, ctx: object) -> str | None:
        return None


def _metavar(param: typer.core.TyperOption | typer.core.TyperArgument, ctx: typer.Context) -> str:
    if isinstance(param, typer.core.TyperOption) and (param.is_flag or param.count):
        return ""
    if param.type_descriptor.is_choice:
        return "[" + param.display_type(ctx).strip("<>") + "]"
    if param.type_descriptor.is_datetime:
        return "TIME"
    longest = max(param.opts, key=len).lstrip("-") if param.opts else str(param.name)
    return longest.replace("-", "_").upper()


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
    return {
        "valid": False,
        "error": str(error).splitlines()[0] if str(error) else type(error).__name__,
        "problems": problems,
    }
