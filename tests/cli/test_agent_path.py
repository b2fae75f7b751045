"""`microseg agent` (running the host agent) takes a short path that leaves every other command's
code out of the long-running daemon; it must behave exactly as the whole app does."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
from typer.testing import CliRunner

from microseg.agent import client as agent_client
from microseg.cli import agent, main

runner = CliRunner()

HEAVY = (
    "microseg.cli.commands",
    "microseg.cli.admin",
    "microseg.cli.remote",
    "microseg.cli.serve",
    "microseg.cli.analytics",
    "microseg.cli.k8s",
    "microseg.cli.demo",
    "microseg.cli.lab",
    "microseg.cli.policy",
    "microseg.cli.client",
    "microseg.cli.output",
    "microseg.server",
    "microseg.engine",
    "fastapi",
    "sqlalchemy",
    "rich",
    "pygments",
    "click",
    "httpx._main",
)
"""What the running agent has no use for (`click`: typer brings its own; `rich`: only for errors)."""

# Runs the real entry point up to the moment the agent installs its signal handlers: everything is
# imported and the agent built (state directory, client), but nothing is enforced or contacted.
STOP_BEFORE_RUNNING = """
import json, os, signal, sys

def stop(signum, handler):
    print(json.dumps(sorted(name for name, module in sys.modules.items() if module)), flush=True)
    os._exit(0)

signal.signal = stop
sys.argv = ["microseg", "--token", "t", "agent", "--server", "http://127.0.0.1:9", "--state-dir", sys.argv[1]]
from microseg.cli import main
main.run()
"""


def test_running_the_agent_imports_no_other_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STOP_BEFORE_RUNNING, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout))
    assert "microseg.agent.daemon" in modules  # it got as far as the agent itself
    loaded = [name for name in modules if name.split(".")[0] in HEAVY or name.startswith(HEAVY)]
    assert not loaded, f"the running agent imports {sorted(loaded)}"


def params(command: Any) -> dict[str, tuple[Any, ...]]:
    """Every option of a click command as what a person can give and what the command gets."""
    return {
        param.name: (
            tuple(param.opts),
            tuple(param.secondary_opts),
            param.default,
            param.envvar,
            param.required,
            getattr(param, "is_flag", None),
            param.multiple,
            param.is_eager,
            getattr(param, "help", None),
            param.metavar,
            param.nargs,
            getattr(param, "hidden", None),
            str(param.type_descriptor.annotation),
        )
        for param in command.params
    }


def test_the_agents_app_takes_the_options_the_whole_app_takes() -> None:
    whole = typer.main.get_command(main.app)
    short = typer.main.get_command(main.agent_app(main.reporting_lazily(agent.agent)))
    assert isinstance(whole, typer.core.TyperGroup) and isinstance(short, typer.core.TyperGroup)
    assert params(short) == params(whole)
    assert (short.name, short.no_args_is_help, short.help) == (whole.name, whole.no_args_is_help, whole.help)
    whole_agent, short_agent = whole.commands["agent"], short.commands["agent"]
    assert isinstance(whole_agent, typer.core.TyperGroup) and isinstance(short_agent, typer.core.TyperGroup)
    assert params(short_agent) == params(whole_agent)
    assert short_agent.invoke_without_command and whole_agent.invoke_without_command
    assert list(short.commands) == ["agent"] and not short_agent.commands
    assert set(params(short_agent)) == {
        "server",
        "enroll_token",
        "netns",
        "state_dir",
        "ca_file",
        "hostname",
        "kind",
        "dataplane",
        "interval",
        "log_level",
        "uninstall",
    }


SERVER = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("args", "short"),
    [
        (["agent", "--server", SERVER, "--enroll-token", "t", "--interval", "0.5"], True),
        (["--server", SERVER, "--token", "t", "agent", f"--server={SERVER}", "--uninstall"], True),
        (["agent"], True),  # the agent itself says --server is required
        (["agent", "--server", SERVER, "--kind", "bad"], True),  # and that the kind is wrong
        (["agent", "list"], False),
        (["agent", "revoke", "7"], False),
        (["agent", "--help"], False),
        (["agent", "--server", SERVER, "--help"], False),
        (["--version", "agent"], False),
        (["agent", "--bogus"], False),
        (["agent", "--server"], False),
        (["agent", "--interval", "soon"], False),
        (["agent", "--server", SERVER, "extra"], False),
        (["agent", "--", "--server", SERVER], False),
        (["agent", "--uninstall=yes"], False),
        (["--bogus", "agent"], False),
        (["validate", "--example"], False),
        ([], False),
    ],
)
def test_only_a_clean_agent_run_takes_the_short_path(args: list[str], short: bool) -> None:
    assert main.runs_agent(args) is short


def test_shell_completion_goes_to_the_whole_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_MICROSEG_COMPLETE", "bash_complete")
    assert not main.runs_agent(["agent", "--server", SERVER])


@pytest.mark.parametrize(
    "args",
    [
        ["agent"],
        ["--server", SERVER, "agent"],
        ["agent", "--server", SERVER, "--kind", "bad"],
        ["agent", "--server", SERVER, "--ca-file", "/nonexistent/ca.pem"],
    ],
)
def test_the_agents_errors_read_as_in_the_whole_app(args: list[str]) -> None:
    whole = runner.invoke(main.app, args)
    short = runner.invoke(main.agent_app(main.reporting_lazily(agent.agent)), args)
    assert (short.exit_code, short.output) == (whole.exit_code, whole.output)
    assert short.exit_code == 2 and short.output.startswith("error: ")


def test_a_plain_http_server_gets_a_context_that_trusts_nothing(tmp_path: Path) -> None:
    closed = agent_client.trust_for("http://127.0.0.1:9", True)
    assert isinstance(closed, ssl.SSLContext)
    assert closed.verify_mode == ssl.CERT_REQUIRED and closed.check_hostname
    assert closed.cert_store_stats()["x509_ca"] == 0
    assert agent_client.trust_for("https://cp.example", True) is True  # httpx: the system's CAs
    assert agent_client.trust_for("HTTPS://cp.example", False) is False
