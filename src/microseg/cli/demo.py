"""`microseg demo`: the engine on the example estate, step by step.

Until the lab exists, the demo shows what the engine decides and why, without touching any
firewall: the estate validates, a reachability matrix between label groups, explained verdicts
(an allowed flow, a guard-rail denial, a default deny, a quarantined workload) and the nftables
ruleset an agent would load on the production database.
"""

from __future__ import annotations

import typer
from rich.panel import Panel

from microseg import settings
from microseg.cli import explain, loading, output, policy
from microseg.engine import engine, reachability
from microseg.model import labels, selectors
from microseg.render import nftables


def demo(files: output.Files = None) -> None:
    """Walk through the engine on the example estate: validate, matrix, explain, render."""
    con = output.console
    est = loading.load(files)
    eng = engine.PolicyEngine(est)
    con.rule("[bold]microseg demo[/]: label-based microsegmentation, explained")
    step(1, "Validate the estate (policy as code)")
    counts = policy.summary_counts(est)
    con.print(", ".join(f"{n} {k}" for k, n in counts.items()))
    con.print("tiers in order: " + " -> ".join(eng.book.tiers) + " -> default deny")
    step(2, "Who can reach whom: reachability between label groups")
    cells = reachability.matrix(eng, ("env", "role"), reachability.probes_of(eng))
    rows = policy.matrix_rows(cells)
    con.print(policy.matrix_table(rows))
    step(3, "Every verdict explains itself")
    shown = explained_flows(eng)
    step(4, "What the agent on the production database would load (nftables, one atomic batch)")
    db = first(eng, "env=prod,role=db")
    rendered = nftables.render(eng.document(db), settings.Settings.from_env().render)
    con.print(Panel(rendered.text.rstrip(), title=f"ruleset for {db}", expand=False), markup=False)
    for warning in rendered.warnings:
        con.print(f"[yellow]note[/]: {warning}")
    con.rule("[bold]summary[/]")
    managed, identities = len(eng.documents()), len(eng.rulesets)
    con.print(
        f"{managed} managed workloads compiled into {identities} identity rulesets; "
        f"{shown} flows explained; nothing on this machine was changed."
    )


def step(number: int, title: str) -> None:
    """A numbered heading."""
    output.console.print()
    output.console.rule(f"[bold cyan]step {number}[/]: {title}", align="left")


def first(eng: engine.PolicyEngine, selector_text: str) -> str:
    """The first workload (by name) matching a selector."""
    selector = selectors.LabelSelector.parse(selector_text)
    for name in eng.workload_names():
        if selector.matches(eng.effective_labels(name)):
            return name
    raise typer.BadParameter(f"the estate has no workload matching {selector_text}")


def explained_flows(eng: engine.PolicyEngine) -> int:
    """Explain a few telling flows, then quarantine a web server and explain again; return how many."""
    web, app = first(eng, "env=prod,role=web"), first(eng, "env=prod,role=app")
    db, dev_web = first(eng, "env=prod,role=db"), first(eng, "env=dev,role=web")
    flows = [
        ("a least-privilege allow", explain.Flow(app, db, "3306/tcp", "mysqld")),
        ("a guard rail: dev never reaches prod", explain.Flow(dev_web, db, "3306/tcp")),
        ("lateral movement: the web tier tries the database directly", explain.Flow(web, db, "3306/tcp")),
        ("an unknown address tries ssh", explain.Flow("10.77.123.45", db, "22/tcp")),
    ]
    for title, flow in flows:
        _show(eng, title, flow)
    victim = eng.workload(app)
    eng.upsert_workload(victim.with_labels(victim.labels.merged(labels.Labels({"quarantine": "true"}))))
    _show(eng, f"incident response: `quarantine=true` on {app}", explain.Flow(app, db, "3306/tcp", "mysqld"))
    eng.upsert_workload(victim)
    return len(flows) + 1


def _show(eng: engine.PolicyEngine, title: str, flow: explain.Flow) -> None:
    output.console.print(f"\n[bold]{title}[/]")
    verdict, summary = explain.explain_flow(eng, flow)
    explain.print_verdict(summary, verdict)
