"""`microseg demo`: the engine on the example estate, step by step.

Until the lab exists, the demo shows what the engine decides and why, without touching any
firewall: the estate validates, a reachability matrix between label groups, explained verdicts
(an allowed flow, a guard-rail denial, a default deny, a quarantined workload) and the nftables
ruleset an agent would load on the production database.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.panel import Panel

from microseg import settings
from microseg.cli import explain, loading, output, policy
from microseg.engine import engine, reachability
from microseg.model import labels, selectors, verdicts
from microseg.render import nftables


def demo(files: output.Files = None, fmt: output.Output = output.Format.TABLE) -> None:
    """Walk through the engine on the example estate: validate, matrix, explain, render."""
    est = loading.load(files)
    eng = engine.PolicyEngine(est)
    counts = policy.summary_counts(est)
    rows = policy.matrix_rows(reachability.matrix(eng, ("env", "role"), reachability.probes_of(eng)))
    flows = explained_flows(eng)
    db = first(eng, "env=prod,role=db")
    rendered = nftables.render(eng.document(db), settings.Settings.from_env().render)
    managed, identities = len(eng.documents()), len(eng.rulesets)
    if fmt is output.Format.JSON:
        output.emit_json(
            {
                "counts": counts,
                "tiers": list(eng.book.tiers),
                "matrix": rows,
                "flows": [{"title": t, "flow": s, "verdict": v.to_dict()} for t, s, v in flows],
                "ruleset": {"workload": db, "nftables": rendered.text, "warnings": list(rendered.warnings)},
                "managedWorkloads": managed,
                "identities": identities,
            }
        )
        return
    con = output.console
    con.rule("[bold]microseg demo[/]: label-based microsegmentation, explained")
    step(1, "Validate the estate (policy as code)")
    con.print(", ".join(f"{n} {k}" for k, n in counts.items()))
    con.print("tiers in order: " + " -> ".join(eng.book.tiers) + " -> default deny")
    step(2, "Who can reach whom: reachability between label groups")
    con.print(policy.matrix_table(rows))
    step(3, "Every verdict explains itself")
    for title, summary, verdict in flows:
        con.print(f"\n[bold]{title}[/]")
        explain.print_verdict(summary, verdict)
    step(4, "What the agent on the production database would load (nftables, one atomic batch)")
    con.print(Panel(rendered.text.rstrip(), title=f"ruleset for {db}", expand=False), markup=False)
    for warning in rendered.warnings:
        con.print(f"[yellow]note[/]: {warning}")
    con.rule("[bold]summary[/]")
    con.print(
        f"{managed} managed workloads compiled into {identities} identity rulesets; "
        f"{len(flows)} flows explained; nothing on this machine was changed."
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


Explained = tuple[str, dict[str, Any], verdicts.Verdict]


def explained_flows(eng: engine.PolicyEngine) -> list[Explained]:
    """A few telling flows, then a web server quarantined and the same flow again."""
    web, app = first(eng, "env=prod,role=web"), first(eng, "env=prod,role=app")
    db, dev_web = first(eng, "env=prod,role=db"), first(eng, "env=dev,role=web")
    flows = [
        ("a least-privilege allow", explain.Flow(app, db, "3306/tcp", "mysqld")),
        ("a guard rail: dev never reaches prod", explain.Flow(dev_web, db, "3306/tcp")),
        ("lateral movement: the web tier tries the database directly", explain.Flow(web, db, "3306/tcp")),
        ("an unknown address tries ssh", explain.Flow("10.77.123.45", db, "22/tcp")),
    ]
    victim = eng.workload(app)
    quarantined = victim.with_labels(victim.labels.merged(labels.Labels({"quarantine": "true"})))
    out: list[Explained] = []
    for title, flow in flows:
        verdict, summary = explain.explain_flow(eng, flow)
        out.append((title, summary, verdict))
    eng.upsert_workload(quarantined)
    verdict, summary = explain.explain_flow(eng, explain.Flow(app, db, "3306/tcp", "mysqld"))
    out.append((f"incident response: `quarantine=true` on {app}", summary, verdict))
    eng.upsert_workload(victim)
    return out
