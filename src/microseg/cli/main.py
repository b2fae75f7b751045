"""The `microseg` command: wires every command group into one Typer app.

Errors a person can fix (`microseg.errors.UserError`) print to stderr and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from microseg import __version__, errors
from microseg.cli import demo, explain, output, policy, serve


def _reporting(command: Callable[..., None]) -> Callable[..., None]:
    """Turn microseg's own errors into a message on stderr and an exit code (2 for user errors)."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except errors.MicrosegError as exc:
            output.fail(exc)

    return run_command


app = typer.Typer(
    name="microseg",
    help="Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(_reporting(policy.validate))
app.command()(_reporting(explain.explain))
app.command()(_reporting(policy.render))
app.command()(_reporting(policy.matrix))
app.command()(_reporting(policy.diff))
app.command()(_reporting(demo.demo))
app.command()(_reporting(serve.server))
app.add_typer(serve.db_app, name="db")
app.add_typer(serve.token_app, name="token")


@app.command()
def version() -> None:
    """Print the version."""
    output.console.print(__version__)


def run() -> None:
    """Console-script entry point."""
    app()
