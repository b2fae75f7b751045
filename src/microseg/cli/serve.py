"""`microseg server`, `microseg db upgrade` and `microseg token create`: running the control plane.

The server migrates its database at start; on the very first start (no API token exists yet) it
prints one admin token to the terminal, once. `token create` makes more (run it where the database
is reachable); tokens are stored hashed, so a lost one is revoked and replaced, never recovered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the server stack (FastAPI, SQLAlchemy, Alembic) loads only for these commands:
    from microseg.server import config  # `microseg agent` must not pay for it in memory
    from microseg.store import database

DataDir = Annotated[str | None, typer.Option("--data-dir", help="directory of the SQLite database")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (or MICROSEG_DATABASE)"
    ),
]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def _settings(data_dir: str | None, url: str | None, **more: object) -> config.ServerSettings:
    from microseg.server import config

    return config.ServerSettings.from_env(overrides={"database": url, "data_dir": data_dir, **more})


def server(
    *,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8440,
    data_dir: DataDir = None,
    url: DatabaseUrl = None,
    control_plane: Annotated[
        list[str] | None,
        typer.Option("--control-plane", help="ADDRESS:PORT agents use to reach this server (repeatable)"),
    ] = None,
    tls_cert: Annotated[str | None, typer.Option(help="PEM certificate: serve HTTPS")] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM private key for --tls-cert")] = None,
    stream: Annotated[
        list[str] | None,
        typer.Option("--stream", help="SIEM sink URL, e.g. syslog+tcp://host:601 (repeatable; docs/siem.md)"),
    ] = None,
    hook_secret: Annotated[
        list[str] | None,
        typer.Option("--hook-secret", help="NAME=SECRET of a tool calling the signed webhooks (repeatable)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the control plane (REST API under /api/v1, OpenAPI at /docs)."""
    import uvicorn

    from microseg.server import app as server_app
    from microseg.store import migrate

    more: dict[str, object] = {"host": host, "port": port, "tls_cert": tls_cert, "tls_key": tls_key}
    if control_plane:
        more["control_plane"] = tuple(control_plane)
    if stream:
        more["streams"] = tuple(stream)
    if hook_secret:
        more["hook_secrets"] = tuple(hook_secret)
    settings = _settings(data_dir, url, **more)
    db = server_app.open_database(settings)
    migrate.upgrade(db)
    app = server_app.create_app(settings, db, migrate_schema=False)  # refuses bad settings first
    _first_admin_token(db)
    # Agents hold long-polls open; without a bound, SIGTERM would wait for all of them.
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )


def _first_admin_token(db: database.Database) -> None:
    from microseg.store import audit, tokens

    with db.write() as conn:
        if tokens.count_api(conn):
            return
        row, text = tokens.create_api(conn, "first-admin", "admin", "server:first-start")
        audit.record(conn, "server:first-start", "create-token", f"token/{row.id}", {"role": "admin"})
    typer.echo(
        f"First start: an admin API token was made. It is shown only this once:\n\n  {text}\n", err=True
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, url: DatabaseUrl = None) -> None:
    """Migrate the database to this microseg's schema."""
    from microseg.server import app as server_app
    from microseg.store import migrate

    settings = _settings(data_dir, url)
    db = server_app.open_database(settings)
    before = migrate.current(db)
    after = migrate.upgrade(db)
    typer.echo(f"database at revision {after} (was {before or 'empty'})")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, editor or viewer")],
    name: Annotated[str, typer.Option(help="what the token is for")] = "cli",
    data_dir: DataDir = None,
    url: DatabaseUrl = None,
) -> None:
    """Print a new API token (stored hashed: it is shown only now)."""
    from microseg.server import app as server_app
    from microseg.store import audit, migrate, tokens

    if role not in tokens.ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(tokens.ROLES)}", param_hint="--role")
    db = server_app.open_database(_settings(data_dir, url))
    migrate.upgrade(db)
    with db.write() as conn:
        row, text = tokens.create_api(conn, name, role, "cli:token-create")
        audit.record(
            conn, "cli:token-create", "create-token", f"token/{row.id}", {"name": name, "role": role}
        )
    typer.echo(text)
