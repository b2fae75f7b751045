"""The `microseg` command's entry point and global options.

The whole command lives in `microseg.cli.commands`. Running the host agent
(`microseg [GLOBAL OPTIONS] agent [OPTIONS]`) does not build it: the agent runs for weeks, and
every other command's code (server, analytics, Kubernetes, Rich tables) would stay in its memory.
`run` hands such arguments to an app of the global options and the agent alone, made from the
same definitions, once a dry run shows that app takes them; help, `--version`, `agent list|revoke`
and every mistake go to the whole app, so what a person sees is unchanged.

Errors a person can fix (`microseg.errors.UserError`) print to stderr and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
import typer.core

from microseg import errors

HELP = "Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement."
EAGER_OPTIONS = ("--help", "--version")
"""Options that print and exit while the arguments are parsed: a dry run must never see them."""
WHOLE_APP_NAMES = frozenset({"app", "SERVER_COMMANDS", "k8s_app", "version"})
"""What `microseg.cli.commands` defines that this module used to (`microseg.cli.main.app`)."""


def root_app() -> typer.Typer:
    """The `microseg` group without commands, as the whole app and the agent's app both have it."""
    return typer.Typer(
        name="microseg",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def print_version(wanted: bool) -> None:
    """`microseg --version`: print it and stop before any command runs."""
    if wanted:
        from microseg import __version__
        from microseg.cli import output

        output.console.print(__version__, markup=False)
        raise typer.Exit()


Server = Annotated[
    str | None, typer.Option("--server", metavar="URL", help="control plane (or MICROSEG_SERVER)")
]
Token = Annotated[str | None, typer.Option("--token", metavar="TOKEN", help="API token (or MICROSEG_TOKEN)")]
Config = Annotated[
    str | None, typer.Option("--config", metavar="FILE", help="config file of `microseg login`")
]
Version = Annotated[
    bool,
    typer.Option(
        "--version", metavar="", is_eager=True, callback=print_version, help="print the version and exit"
    ),
]


def main(
    ctx: typer.Context,
    server: Server = None,
    token: Token = None,
    config: Config = None,
    _version: Version = False,
) -> None:
    """Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement."""
    from microseg.cli import client, output  # here: the agent's app runs without them

    ctx.obj = client.Target(server, token, config)
    if isinstance(ctx.command, typer.core.TyperGroup):  # before a subcommand reads its --help
        output.readable_metavars(ctx.command, ctx)


def agent_globals(
    server: Server = None,
    token: Token = None,
    config: Config = None,
    _version: Version = False,
) -> None:
    """Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement."""
    # Accepted as the whole app accepts them; the agent reads its server from its own --server.


def agent_app(run_agent: Callable[..., None]) -> typer.Typer:
    """`microseg [GLOBAL OPTIONS] agent [OPTIONS]` and nothing else: the root and the agent group
    of the whole app, without `agent list|revoke` (they are the whole app's)."""
    from microseg.cli import agent

    app = root_app()
    app.callback()(agent_globals)
    app.add_typer(agent.group(run_agent))
    return app


def runs_agent(args: Sequence[str]) -> bool:
    """Whether `args` run the host agent exactly as the whole app would: `agent` is named, no
    eager option is given, and a dry run of the agent's app takes every argument and reaches the
    agent (not a usage error, not a subcommand) without running it."""
    if "agent" not in args or any(arg.startswith(EAGER_OPTIONS) for arg in args) or _completing():
        return False
    reached: list[dict[str, Any]] = []
    dry_run = typer.main.get_command(agent_app(_recording(reached)))
    try:
        dry_run.main(args=list(args), prog_name="microseg", standalone_mode=False)
    except (typer.TyperException, typer.Exit, typer.Abort):
        return False  # the whole app words it, as before
    return bool(reached)


def _completing() -> bool:
    """Whether a shell asks for completions (`_MICROSEG_COMPLETE`, named after the program): the
    whole app answers them, from its arguments in the environment."""
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def _recording(into: list[dict[str, Any]]) -> Callable[..., None]:
    """A stand-in for the agent with its options: it only notes that it was reached."""
    from microseg.cli import agent

    @functools.wraps(agent.agent)
    def record(**options: Any) -> None:
        into.append(options)

    return record


def reporting_lazily(command: Callable[..., None]) -> Callable[..., None]:
    """`output.reporting` for the agent (which has no `-o json`), importing Rich only when there
    is an error to print."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except errors.MicrosegError as exc:
            from microseg.cli import output

            output.fail(exc)

    return run_command


def skip_httpx_cli() -> None:
    """Keep httpx's own command-line client (click, Rich, Pygments: about 6 MB) out of the agent.
    `import httpx` imports it when it can; when it cannot, `httpx.main` becomes a stub that says
    so. The agent never calls `httpx.main`, and only the agent's process gets this."""
    if "httpx" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]  # None: "cannot be imported"


def whole_app() -> typer.Typer:
    """Every command (importing all their modules)."""
    from microseg.cli import commands

    return commands.app


def run() -> None:
    """Console-script entry point."""
    if runs_agent(sys.argv[1:]):
        from microseg.cli import agent

        skip_httpx_cli()
        agent_app(reporting_lazily(agent.agent))()
    else:
        whole_app()()


def __getattr__(name: str) -> Any:
    """The whole app's names, where they were before it moved to `microseg.cli.commands`."""
    if name in WHOLE_APP_NAMES:
        from microseg.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
