"""`microseg agent`: run the host agent, or remove what it installed (`--uninstall`).

The agent runs in the foreground (systemd or the lab keeps it running; see
packaging/microseg-agent.service) until SIGTERM or SIGINT. Stopping it leaves the rules in force
(fail-static); only `--uninstall` removes them, and it removes nothing but the agent's own table
(and the iptables fallback's own chains and sets).
"""

from __future__ import annotations

import inspect
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from microseg import errors
from microseg import settings as config


def agent(
    *,
    server: Annotated[str | None, typer.Option("--server", help="control plane URL")] = None,
    enroll_token: Annotated[
        str | None, typer.Option("--enroll-token", help="one-time or reusable enrollment token")
    ] = None,
    netns: Annotated[
        str | None, typer.Option("--netns", help="network namespace to run in (name or /proc/PID/ns/net)")
    ] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="credential, last ruleset, flow spool")
    ] = Path("/var/lib/microseg-agent"),
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="MICROSEG_CA_FILE",
            help="PEM CA certificate of a private CA: trust only it for the server",
        ),
    ] = None,
    hostname: Annotated[str | None, typer.Option(help="hostname to report (the workload name)")] = None,
    kind: Annotated[str, typer.Option(help="workload kind: host, vm, container, pod")] = "vm",
    dataplane: Annotated[str, typer.Option(help="auto, nftables or iptables")] = "auto",
    interval: Annotated[float, typer.Option(help="seconds between tamper checks")] = 1.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    uninstall: Annotated[
        bool, typer.Option("--uninstall", help="remove the agent's table (only that) and exit")
    ] = False,
) -> None:
    """Run the host agent: enforce the provisioned ruleset with nftables, report flows and status."""
    from microseg.agent import daemon
    from microseg.agent import dataplane as planes

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    render = config.Settings.from_env().render
    if uninstall:
        from microseg.cli import output  # here: Rich is no use to the running agent

        removed = planes.uninstall(netns, render)
        output.console.print(
            "removed: " + ", ".join(removed) if removed else "nothing of microseg was installed"
        )
        return
    if not server:
        raise errors.UserError("--server is required (the control plane URL)")
    if kind not in ("host", "vm", "container", "pod"):
        raise errors.UserError(f"--kind must be host, vm, container or pod, not {kind!r}")
    settings = daemon.AgentSettings(
        server=server,
        state_dir=state_dir,
        enroll_token=enroll_token,
        netns=netns,
        hostname=hostname,
        kind=kind,
        dataplane=dataplane,
        interval=interval,
        render=render,
        tls_verify=tls_verify(ca_file),
    )
    runner = daemon.Agent(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()


def group(run_agent: Callable[..., None]) -> typer.Typer:
    """The `agent` group, running `run_agent` with the agent's options when no subcommand is named
    (the whole app adds `agent list|revoke`; the agent's own app in `main` adds nothing)."""

    def run_unless_subcommand(ctx: typer.Context, **options: Any) -> None:
        if ctx.invoked_subcommand is None:
            run_agent(**options)

    # Typer reads the options from the signature: the agent's own, plus the context to look at.
    own = inspect.signature(run_agent, eval_str=True)
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    run_unless_subcommand.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[context, *own.parameters.values()]
    )
    run_unless_subcommand.__doc__ = run_agent.__doc__
    agent_group = typer.Typer(name="agent", help=run_agent.__doc__)
    agent_group.callback(invoke_without_command=True)(run_unless_subcommand)
    return agent_group


def tls_verify(ca_file: Path | None) -> bool | str:
    """What the agent checks the server's certificate against: the system's CAs, or only the
    private CA in `ca_file` (read now, so a wrong path stops the start instead of every call)."""
    if ca_file is None:
        return True
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise errors.UserError(f"--ca-file {ca_file}: not a readable PEM CA certificate ({exc})") from exc
    return str(ca_file)
