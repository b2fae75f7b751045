"""The whole `microseg` command: every command group wired into one Typer app.

`microseg.cli.main` is the entry point; it uses this app for everything but running the host
agent, whose long-running process has no use for the other commands' code (see `main.run`).
"""

from __future__ import annotations

import typer

from microseg import __version__
from microseg.cli import (
    admin,
    agent,
    analytics,
    demo,
    enrollment,
    explain,
    flows,
    k8s,
    lab,
    lint,
    main,
    output,
    policy,
    remote,
    rollout,
    serve,
    template,
)

_reporting = output.reporting


app = main.root_app()
app.callback()(main.main)


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
