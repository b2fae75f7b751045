"""`microseg server`, `microseg db upgrade` and `microseg token create`: running the control plane.

The server migrates its database at start; on the very first start (no API token exists yet) it
makes one admin token and hands it over once, never through logging: printed when stderr is a
terminal, otherwise written to `<data-dir>/initial-admin-token` (mode 0600) with only the path
printed, so a journal or log collector never holds it. `token create` makes more (run it where the
database is reachable; a database that is not there is refused unless `--init`); tokens are stored
hashed, so a lost one is revoked and replaced, never recovered.

`uvicorn_config` is the one place that decides how uvicorn serves the app (TLS, and which peers'
`X-Forwarded-For` is believed); the test servers use it too.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:  # the server stack (FastAPI, SQLAlchemy, Alembic) loads only for these commands:
    import uvicorn  # `microseg agent` must not pay for it in memory
    from fastapi import FastAPI

    from microseg.server import config
    from microseg.store import database

FIRST_TOKEN_FILE = "initial-admin-token"
"""Where a first start without a terminal leaves the admin token, in the data directory."""

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
        typer.Option(
            "--hook-secret",
            help="NAME=SECRET (may only quarantine) or NAME:quarantine+release=SECRET (also release-any) "
            "of a tool calling the signed webhooks (repeatable)",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="address or CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable; "
            "default: nobody's)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the control plane (REST API under /api/v1, OpenAPI document at /openapi.json)."""
    import uvicorn

    from microseg.server import app as server_app
    from microseg.server import collector
    from microseg.store import migrate

    more: dict[str, object] = {"host": host, "port": port, "tls_cert": tls_cert, "tls_key": tls_key}
    for key, values in (
        ("control_plane", control_plane),
        ("streams", stream),
        ("hook_secrets", hook_secret),
        ("trusted_proxies", trusted_proxy),
    ):
        if values:
            more[key] = tuple(values)
    settings = _settings(data_dir, url, **more)
    _check_trusted_proxies(settings.trusted_proxies)
    db = server_app.open_database(settings)
    migrate.upgrade(db)
    app = server_app.create_app(settings, db, migrate_schema=False)  # refuses bad settings first
    _first_admin_token(db, settings)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level=log_level))
    collector.tune()  # this process only: see server/collector
    server.run()
    if not server.started:  # e.g. the port is taken: uvicorn has logged why
        raise typer.Exit(3)


def uvicorn_config(
    app: FastAPI, settings: config.ServerSettings, *, log_level: str = "info", graceful: int = 5
) -> uvicorn.Config:
    """How uvicorn serves `app`: forwarded headers count only from `settings.trusted_proxies`.

    uvicorn's own default believes `X-Forwarded-For` from 127.0.0.1, so any local process (or
    anything relayed through one) could pick the address the enrollment rate limit counts."""
    import uvicorn

    trusted = list(settings.trusted_proxies)
    # Agents hold long-polls open; without a bound (`graceful`), SIGTERM would wait for all of them.
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level=log_level,
        lifespan="on",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,  # a list, so FORWARDED_ALLOW_IPS in the environment is ignored
        timeout_graceful_shutdown=graceful,
    )


def _check_trusted_proxies(proxies: tuple[str, ...]) -> None:
    """Refuse anything but addresses and CIDRs (uvicorn would take a typo as a literal name)."""
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise typer.BadParameter(
                f"{proxy!r} is not an IP address or CIDR", param_hint="--trusted-proxy"
            ) from None


def _first_admin_token(db: database.Database, settings: config.ServerSettings) -> None:
    """Make the first admin token and hand it over (the transaction rolls back if that fails)."""
    from microseg.store import audit, tokens

    with db.write() as conn:
        if tokens.count_api(conn):
            return
        row, text = tokens.create_api(conn, "first-admin", "admin", "server:first-start")
        audit.record(conn, "server:first-start", "create-token", f"token/{row.id}", {"role": "admin"})
        _hand_over(text, settings)


def _hand_over(text: str, settings: config.ServerSettings) -> None:
    """Print the token on a terminal; otherwise stderr is likely a journal or a log file that
    others read and keep, so the token goes to an owner-only file and only its path is printed."""
    if sys.stderr.isatty():
        typer.echo(
            f"First start: an admin API token was made. It is shown only this once:\n\n  {text}\n",
            err=True,
        )
        return
    path = _write_private(Path(settings.data_dir), FIRST_TOKEN_FILE, text + "\n")
    typer.echo(
        f"First start: an admin API token was made and written to {path} (mode 0600).\n"
        "Read it, keep it somewhere safe and delete the file.",
        err=True,
    )


def _write_private(directory: Path, name: str, text: str) -> Path:
    """Write `directory/name` readable by the owner only, replacing any earlier file whole (a
    fresh inode: an old file's mode or a symlink planted in its place is not reused)."""
    from microseg.store import database

    folder = database.private_directory(directory)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, folder / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return folder / name


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
    *,
    role: Annotated[str, typer.Option(help="admin, editor or viewer")],
    name: Annotated[str, typer.Option(help="what the token is for")] = "cli",
    owner: Annotated[
        str | None,
        typer.Option(help="who holds it, e.g. a user name (four-eyes compares owners); default: --name"),
    ] = None,
    data_dir: DataDir = None,
    url: DatabaseUrl = None,
    init: Annotated[
        bool, typer.Option("--init", help="make the database when there is none (default: refuse)")
    ] = False,
) -> None:
    """Print a new API token (stored hashed: it is shown only now)."""
    import re

    from microseg.server import models
    from microseg.store import audit, tokens

    if role not in tokens.ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(tokens.ROLES)}", param_hint="--role")
    if owner is not None and not re.fullmatch(models.OWNER, owner):
        raise typer.BadParameter("letters, digits and . _ @ + - (at most 64)", param_hint="--owner")
    db = _token_database(_settings(data_dir, url), init=init)
    try:
        with db.write() as conn:
            row, text = tokens.create_api(conn, name, role, "cli:token-create", owner or name)
            audit.record(
                conn,
                "cli:token-create",
                "create-token",
                f"token/{row.id}",
                {"name": name, "role": role, "owner": row.owner},
            )
    finally:
        db.dispose()
    typer.echo(text)


def _token_database(settings: config.ServerSettings, *, init: bool) -> database.Database:
    """The existing, migrated database; without `init`, a missing one is refused rather than made,
    since a token in a fresh database (a typo in --data-dir) would work on no server."""
    from microseg.server import app as server_app
    from microseg.store import migrate

    if not init:
        _refuse_missing_sqlite_file(settings)
    db = server_app.open_database(settings)
    if not init and migrate.current(db) is None:
        db.dispose()
        _refuse(db.url.render_as_string(hide_password=True))
    migrate.upgrade(db)
    return db


def _refuse_missing_sqlite_file(settings: config.ServerSettings) -> None:
    """Check before opening: opening a SQLite path creates the file (and the data directory)."""
    import sqlalchemy as sa

    if not settings.database:
        path = Path(settings.data_dir).expanduser().resolve() / "microseg.db"
    else:
        url = sa.make_url(settings.database)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return
        path = Path(url.database).expanduser().resolve()
    if not path.is_file():
        _refuse(str(path))


def _refuse(where: str) -> NoReturn:
    typer.echo(
        f"error: no microseg database at {where}: check --data-dir / --database (a token made in a new, "
        "empty database works on no server), or pass --init to make one there",
        err=True,
    )
    raise typer.Exit(2)
