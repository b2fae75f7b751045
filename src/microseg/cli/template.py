"""`microseg template list | show NAME | apply NAME --set k=v ...`: segmentation templates as drafts.

A thin layer over `microseg.templates.catalog`. `apply` prints (or writes with `--out`) the policy
file a template makes, for review in a pull request; given a server (`--server`, here or before
`template`), it sends the documents to the server's draft instead, the way `microseg apply -f`
does, and says what was created or updated. A token comes from `--token`, MICROSEG_TOKEN or the
`microseg login` config; the server only from `--server`, so that a server in the environment
never turns a review draft into a change on the server by surprise.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from microseg.cli import client, output, remote
from microseg.templates import catalog, parameters

_reported = output.reporting

template_app = typer.Typer(
    name="template",
    help="Segmentation templates: three-tier, API gateway, database per service, shared services, "
    "environment separation, risky ports. Drafts of policy files, parameterised by labels.",
    no_args_is_help=True,
    add_completion=False,
)

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="a parameter, KEY=VALUE (repeatable), e.g. --set app=crm --set env=prod"),
]
Name = Annotated[str, typer.Argument(help="template name (see `microseg template list`)")]


class Format(StrEnum):
    """What `template apply` writes."""

    YAML = "yaml"
    JSON = "json"


@template_app.command("list")
@_reported
def template_list(fmt: output.Output = output.Format.TABLE) -> None:
    """The templates microseg ships."""
    found = [catalog.get(name) for name in catalog.names()]
    if fmt is output.Format.JSON:
        output.emit_json([{"name": t.name, "summary": t.summary, "bands": _bands(t)} for t in found])
        return
    rows = [[t.name, ", ".join(map(str, t.bands)), t.summary] for t in found]
    remote.table("templates", ["NAME", "PRIORITY BAND", "WHAT IT MAKES"], rows)


@template_app.command("show")
@_reported
def template_show(name: Name, sets: Sets = None, fmt: output.Output = output.Format.TABLE) -> None:
    """A template's parameters (with defaults) and the rules it makes (with examples or --set values)."""
    template = catalog.get(name)
    rendered = template.example(parameters.parse_sets(sets or []))
    if fmt is output.Format.JSON:
        output.emit_json(
            {
                "name": template.name,
                "summary": template.summary,
                "description": template.description,
                "bands": _bands(template),
                "parameters": [_parameter(template, p.name) for p in template.parameters],
                "example": {"values": rendered.values, "documents": rendered.documents},
            }
        )
        return
    con = output.console
    con.print(f"[bold]{template.name}[/]: {template.summary}", markup=True)
    con.print(template.description)
    con.print(f"priority band: {', '.join(map(str, template.bands))}")
    remote.table(
        "parameters",
        ["NAME", "TYPE", "DEFAULT", "DESCRIPTION"],
        [
            [
                p.name,
                p.kind.value,
                p.default if p.default is not None else f"required (e.g. {p.example})",
                p.description,
            ]
            for p in template.parameters
        ],
    )
    shown = " ".join(f"{k}={v}" for k, v in rendered.values.items())
    con.print(f"\nwith {shown} it makes:")
    for rule in rendered.estate.rules:
        services = " ".join(map(str, rule.services))
        sources, destinations = (" ".join(map(str, side)) for side in (rule.sources, rule.destinations))
        head = f"{rule.priority:>6} {rule.action.value:<5} {rule.ref}"
        con.print(f"  {head}: {sources} -> {destinations} on {services}")
    for inv in rendered.estate.invariants:
        con.print(f"  invariant {inv.name}: {inv}")


@template_app.command("apply")
@_reported
def template_apply(
    ctx: typer.Context,
    *,
    name: Name,
    sets: Sets = None,
    fmt: Annotated[
        Format | None, typer.Option("-o", "--output", help="yaml (default) or json; with a server: json")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the policy file here")] = None,
    server: Annotated[str | None, typer.Option("--server", help="send to this server's draft")] = None,
    token: Annotated[str | None, typer.Option("--token", help="API token (or MICROSEG_TOKEN)")] = None,
) -> None:
    """Make the draft rules of a template: print them (or --out FILE), or send them to a server's draft."""
    rendered = catalog.get(name).render(parameters.parse_sets(sets or []))
    text = json.dumps(rendered.documents, indent=2) + "\n" if fmt is Format.JSON else rendered.yaml()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    root = remote.target(ctx)
    if server is None and root.server is None:
        if out is None:
            typer.echo(text, nl=False)
        else:
            output.console.print(f"wrote {out} ({output.plural(len(rendered.documents), 'document')})")
        return
    target = client.Target(server or root.server, token or root.token, root.config)
    _send(ctx, client.Client(target), rendered, as_json=fmt is Format.JSON)


def _send(ctx: typer.Context, api: client.Client, rendered: catalog.Rendered, *, as_json: bool) -> None:
    ctx.call_on_close(api.close)
    result = api.post("/apply", {"documents": rendered.documents})
    if as_json:
        output.emit_json(result)
        return
    remote.print_applied(result)


def _bands(template: catalog.Template) -> list[dict[str, Any]]:
    return [{"tier": b.tier, "first": b.first, "last": b.last} for b in template.bands]


def _parameter(template: catalog.Template, name: str) -> dict[str, Any]:
    p = template.parameter(name)
    return {
        "name": p.name,
        "type": p.kind.value,
        "default": p.default,
        "required": p.required,
        "example": p.example,
        "description": p.description,
    }
