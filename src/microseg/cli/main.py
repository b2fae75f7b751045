"""The `microseg` command: wires every command group into one Typer app.

Errors a person can fix (`microseg.errors.UserError`) print to stderr and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer
import typer.core

from microseg import __version__
from microseg.cli import (
    admin,
    agent,
    analytics,
    client,
    demo,
    enrollment,
    explain,
    flows,
    k8s,
    lab,
    lint,
    output,
    policy,
    remote,
    rollout,
    serve,
    template,
)

_reporting = output.reporting


app = typer.Typer(
    name="microseg",
    help="Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def print_version(wanted: bool) -> None:
    """`microseg --version`: print it and stop before any command runs."""
    if wanted:
        output.console.print(__version__, markup=False)
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option("--server", metavar="URL", help="control plane (or MICROSEG_SERVER)")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", metavar="TOKEN", help="API token (or MICROSEG_TOKEN)")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", metavar="FILE", help="config file of `microseg login`")
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", is_eager=True, callback=print_version, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Label-based microsegmentation: policy as code, explainable verdicts, nftables enforcement."""
    ctx.obj = client.Target(server, token, config)
    if isinstance(ctx.command, typer.core.TyperGroup):  # before a subcommand reads its --help
        output.readable_metavars(ctx.command, ctx)


app.command()(_reporting(policy.validate))
app.command()(_reporting(lint.lint))
app.command()(_reporting(explain.explain))
app.command()(_reporting(policy.render))
app.command()(_reporting(policy.matrix))
app.command()(_reporting(policy.diff))
app.command()(_reporting(demo.demo))
app.command()(_reporting(serve.server))
app.add_typer(admin.agent_group(_reporting(agent.agent)))
SERVER_COMMANDS = (
    remote.get,
    remote.apply,
    remote.provision,
    remote.rollback,
    remote.quarantine,
    remote.release,
    remote.events,
    remote.audit,
    remote.login,
)
for command in SERVER_COMMANDS:
    app.command()(_reporting(command))
app.add_typer(flows.flows_app)
app.command("map")(_reporting(analytics.map_))
app.command()(_reporting(analytics.simulate))
app.command()(_reporting(analytics.recommend))
app.command("rule-hits")(_reporting(analytics.rule_hits))
app.add_typer(serve.db_app, name="db")
serve.token_app.command("list")(_reporting(admin.token_list))
serve.token_app.command("revoke")(_reporting(admin.token_revoke))
app.add_typer(serve.token_app, name="token")
app.command()(_reporting(admin.delete))
app.add_typer(admin.draft_app)
app.add_typer(admin.exception_app)
app.add_typer(enrollment.enrollment_app)

k8s_app = typer.Typer(
    name="k8s",
    help="Kubernetes: what NetworkPolicies allow, pods as workloads, export to NetworkPolicy/Calico/Cilium.",
    no_args_is_help=True,
)
k8s_app.command("reachability")(_reporting(k8s.k8s_reachability))
k8s_app.command("import")(_reporting(k8s.k8s_import))
k8s_app.command("export")(_reporting(k8s.k8s_export))
app.add_typer(k8s_app)
app.add_typer(lab.lab_app)
app.add_typer(rollout.rollout_app)
app.add_typer(template.template_app)


@app.command()
def version() -> None:
    """Print the version."""
    output.console.print(__version__)


output.plain_help(app)


def run() -> None:
    """Console-script entry point."""
    app()
