"""`microseg enrollment-token create|list|revoke`: agent enrollment tokens on a control plane (admin).

A token gives the workloads its agents create its labels and mode. `--workload` binds it to
existing workloads its agents may adopt (they keep the labels an operator gave them; without a
binding an agent whose hostname names an existing workload is refused), `--address-range` limits
the addresses its agents may claim. Talks to `/api/v1/enrollment-tokens`; the token's text is
printed once, as the server returns it once.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from microseg import errors
from microseg.cli import client, output, remote

enrollment_app = typer.Typer(
    name="enrollment-token", help="Agent enrollment tokens (admin).", no_args_is_help=True
)
COLUMNS = ["ID", "NAME", "LABELS", "MODE", "REUSABLE", "USES", "WORKLOADS", "ADDRESS RANGES", "REVOKED"]


def _labels(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.UserError(f"--label {pair!r}: expected KEY=VALUE")
        found[key] = value
    return found


@enrollment_app.command("create")
@output.reporting
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="what the token is for (shown in listings and the audit log)")],
    *,
    label: Annotated[list[str] | None, typer.Option("--label", "-L", help="KEY=VALUE (repeat)")] = None,
    mode: Annotated[str, typer.Option(help="visibility, alert or enforce")] = "visibility",
    reusable: Annotated[bool, typer.Option(help="usable by many agents (default: once)")] = False,
    expires_in: Annotated[float | None, typer.Option(help="seconds until it expires")] = None,
    workload: Annotated[
        list[str] | None, typer.Option("--workload", help="an existing workload it may adopt (repeat)")
    ] = None,
    address_range: Annotated[
        list[str] | None, typer.Option("--address-range", help="a CIDR its agents may claim in (repeat)")
    ] = None,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Make an enrollment token; its text is shown only this once."""
    body: dict[str, Any] = {
        "name": name,
        "labels": _labels(label or []),
        "mode": mode,
        "reusable": reusable,
        "workloads": workload or [],
        "addressRanges": address_range or [],
    }
    if expires_in is not None:
        body["expiresIn"] = expires_in
    made = remote.connect(ctx).post("/enrollment-tokens", body)
    if not remote.emit(made, fmt):
        output.console.print(f"enrollment token {made['id']} ({made['name']}), shown only this once:")
        typer.echo(made["token"])


@enrollment_app.command("list")
@output.reporting
def listing(ctx: typer.Context, fmt: remote.Out = remote.Format.TABLE) -> None:
    """Enrollment tokens (never their secrets)."""
    items = remote.connect(ctx).get("/enrollment-tokens")["items"]
    if not remote.emit(items, fmt):
        remote.table(f"enrollment tokens ({len(items)})", COLUMNS, [_cells(t) for t in items])


def _cells(t: dict[str, Any]) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(t["labels"].items())) or "-"
    return [
        t["id"],
        t["name"],
        labels,
        t["mode"],
        "yes" if t["reusable"] else "no",
        str(t["uses"]),
        ",".join(t["workloads"]) or "-",
        ",".join(t["address_ranges"]) or "any",
        remote.when(t["revoked_at"]),
    ]


@enrollment_app.command("revoke")
@output.reporting
def revoke(ctx: typer.Context, ident: Annotated[str, typer.Argument(help="the token's id")]) -> None:
    """Revoke an enrollment token (agents that enrolled with it keep their credentials)."""
    remote.connect(ctx).call("DELETE", client.item_path("enrollment-tokens", ident))
    output.console.print(f"revoked enrollment token {ident}")
