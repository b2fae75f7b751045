"""`microseg demo`: the story of microsegmentation on a real lab, or offline on the engine alone.

The lab demo (the default) needs root on Linux: it builds the network-namespace lab and tells the
story with real traffic (`microseg.lab.demo`), step by step, with a spinner while a step waits and
its facts and checks after it, then a scorecard; `-o json` prints only the scorecard. Where the lab
cannot run it says why and how (`sudo`, or `--offline`) and exits with 2: it does not silently
show something else. `--offline` is the engine walk-through on the example estate, which touches no
firewall: the estate validates, a reachability matrix between label groups, explained verdicts (an
allowed flow, a guard-rail denial, a default deny, a quarantined workload) and the nftables ruleset
an agent would load on the production database.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.status import Status
from rich.table import Table

from microseg import settings
from microseg.cli import explain, loading, output, policy
from microseg.engine import engine, reachability
from microseg.lab import demo as lab_demo
from microseg.lab import scorecard
from microseg.model import labels, selectors, verdicts
from microseg.render import nftables


def demo(
    *,
    offline_only: Annotated[
        bool, typer.Option("--offline", help="the engine walk-through only: no lab, no root, no firewall")
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="leave the lab and its console running; prints the URL and token")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="directory for demo-map.html and demo-map.png")] = Path(
        "demo-output"
    ),
    files: output.Files = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """The story on a real lab: flat network, map, least privilege, enforce, attacks, tamper, quarantine."""
    if offline_only:
        offline(files, fmt)
        return
    problems = lab_demo.preflight()
    if problems:
        output.err_console.print(_cannot_run(problems))
        raise typer.Exit(2)
    if taken := lab_demo.occupied(lab_demo.DemoOptions().lab):
        output.err_console.print("[bold red]microseg demo needs the lab to itself:[/] " + "; ".join(taken))
        raise typer.Exit(2)
    card = _run_lab(lab_demo.DemoOptions(out_dir=out, keep=keep), fmt)
    if fmt is output.Format.JSON:
        output.emit_json(card.to_json())
    else:
        _print_scorecard(card)
    if not card.ok:
        raise typer.Exit(1)


def _cannot_run(problems: list[str]) -> str:
    return (
        "[bold red]microseg demo cannot build its lab here:[/]\n"
        + "".join(f"  - {p}\n" for p in problems)
        + "Run it as root on Linux with nftables (`sudo .venv/bin/microseg demo`, or `sudo ./dev demo`), "
        "or see the engine alone, changing nothing: `microseg demo --offline`."
    )


def _run_lab(opts: lab_demo.DemoOptions, fmt: output.Format) -> scorecard.Scorecard:
    """The lab demo, taken down also on Ctrl-C and SIGTERM."""
    con = output.err_console if fmt is output.Format.JSON else output.console
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return lab_demo.run(opts, ConsoleReporter(con))
    except KeyboardInterrupt:
        output.err_console.print("interrupted: the lab was taken down")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class ConsoleReporter:
    """Each step as a heading, a spinner saying what it waits for, then its facts and checks."""

    def __init__(self, con: Console) -> None:
        self.con = con
        self.status: Status | None = None

    def on_step_started(self, number: int, title: str) -> None:
        self._stop()  # an interrupted step never reported its end
        self.con.print()
        self.con.rule(f"[bold cyan]step {number}[/]: {title}", align="left")
        self.status = self.con.status(title)
        self.status.start()

    def on_step_progress(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)

    def on_step_done(self, result: scorecard.StepResult) -> None:
        self._stop()
        for item in result.shown:
            if isinstance(item, str):
                self.con.print(item, markup=False)
            else:
                self.con.print(_table(item.headers, item.rows))
        for check in result.checks:
            if not check.ok:
                self.con.print(f"[red]FAILED[/] {check.name}" + (f": {check.detail}" if check.detail else ""))
        mark = "[green]passed[/]" if result.ok else "[bold red]failed[/]"
        self.con.print(f"{mark} in {result.seconds:.1f} s: {result.summary}")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _table(headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> Table:
    table = Table(*headers, header_style="bold", show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    return table


def _print_scorecard(card: scorecard.Scorecard) -> None:
    con = output.console
    con.print()
    con.rule("[bold]scorecard[/]")
    rows = tuple(
        (
            str(s.number),
            s.title.partition(":")[0],
            "pass" if s.ok else "FAIL",
            f"{s.seconds:.1f} s",
            s.summary,
        )
        for s in card.steps
    )
    con.print(_table(("", "step", "result", "time", "what it showed"), rows))
    passed = sum(1 for s in card.steps if s.ok)
    con.print(
        f"{passed} of {output.plural(len(card.steps), 'step')} passed in {card.seconds:.0f} s; "
        f"map files in {card.out_dir}"
    )
    if card.kept:
        con.print(f"the lab is still up: console {card.server}/  admin token {card.token}")
        con.print("take it down with `microseg lab down`")


def offline(files: output.Files = None, fmt: output.Output = output.Format.TABLE) -> None:
    """Walk through the engine on the example estate: validate, matrix, explain, render."""
    est = loading.load(files, example=not files)  # the walk-through is about the example unless told
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
    con.print(output.counted(counts))
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
        f"{output.plural(managed, 'managed workload')} compiled into "
        f"{output.plural(identities, 'identity ruleset')}; {output.plural(len(flows), 'flow')} explained; "
        "nothing on this machine was changed."
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
