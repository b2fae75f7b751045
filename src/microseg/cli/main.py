"""The `microseg` command: wires every command group into one Typer app.

Errors a person can fix (`microseg.errors.UserError`) print to stderr and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import typer

from microseg import __version__, errors
from microseg.cli import demo, explain, output, policy

app = typer.Typer(
    name="microseg",
    help="Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(policy.validate)
app.command()(explain.explain)
app.command()(policy.render)
app.command()(policy.matrix)
app.command()(policy.diff)
app.command()(demo.demo)


@app.command()
def version() -> None:
    """Print the version."""
    output.console.print(__version__)


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except errors.MicrosegError as exc:
        output.fail(exc)
