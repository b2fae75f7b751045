"""Running the control plane as a user does: `microseg server` hands over the first admin token once,
serves HTTPS with --tls-cert/--tls-key, and `db upgrade` / `token create` work on the same store."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.store import database, migrate, tokens
from tests.conftest import require
from tests.server import processes

runner = CliRunner()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "microseg", "server", "--host", "127.0.0.1", *args],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def test_the_first_start_hands_over_one_admin_token_and_later_starts_do_not(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for start in (1, 2):
        port = processes.free_port()
        log = tmp_path / f"start-{start}.log"
        process = _start(["--port", str(port), "--data-dir", str(data), "--log-level", "warning"], log)
        try:
            processes.wait_ready(f"http://127.0.0.1:{port}", process, log)
        finally:
            processes.stop(process)
        # Not a terminal (as under systemd): the token goes to an owner-only file, never the log.
        assert re.findall(r"msk_[A-Za-z0-9_-]+", log.read_text()) == []
        handed = data / "initial-admin-token"
        if start == 1:
            first = handed.read_text().strip()
            handed.unlink()  # as the message asks
        else:
            assert not handed.exists()
    port = processes.free_port()
    log = tmp_path / "start-3.log"
    process = _start(["--port", str(port), "--data-dir", str(data)], log)
    try:
        processes.wait_ready(f"http://127.0.0.1:{port}", process, log)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/tokens", headers={"Authorization": f"Bearer {first}"}
        )
        assert answer.status_code == 200 and answer.json()["items"][0]["role"] == "admin"
    finally:
        processes.stop(process)
    assert first not in (tmp_path / "start-3.log").read_text()


def test_https_with_tls_cert_and_key(tmp_path: Path) -> None:
    require(shutil.which("openssl") is not None, "needs the openssl command to make a test certificate")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    port = processes.free_port()
    log = tmp_path / "tls.log"
    args = [
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    process = _start(args, log)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        processes.wait_ready(f"https://127.0.0.1:{port}", process, log, verify=trust)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=2)  # not trusted without our CA
    finally:
        processes.stop(process)


def test_db_upgrade_and_token_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROSEG_DATABASE", raising=False)
    data = tmp_path / "data"
    result = runner.invoke(main.app, ["db", "upgrade", "--data-dir", str(data)])
    assert (
        result.exit_code == 0
        and f"revision {migrate.head()}" in result.output
        and "was empty" in result.output
    )
    result = runner.invoke(
        main.app, ["token", "create", "--role", "viewer", "--name", "ci", "--data-dir", str(data)]
    )
    assert result.exit_code == 0 and result.output.startswith("msk_")
    result = runner.invoke(main.app, ["token", "create", "--role", "root", "--data-dir", str(data)])
    assert result.exit_code == 2
    db = database.Database(database.sqlite_url(data))
    assert migrate.current(db) == migrate.head()
    db.dispose()
    assert os.path.exists(data / "microseg.db")


def test_no_secret_reaches_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = database.Database(database.sqlite_url(data))
    migrate.upgrade(db)
    with db.write() as conn:
        admin = tokens.create_api(conn, "t", "admin", "test")[1]
    db.dispose()
    port = processes.free_port()
    log = tmp_path / "info.log"
    process = _start(["--port", str(port), "--data-dir", str(data), "--log-level", "debug"], log)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        processes.wait_ready(f"http://127.0.0.1:{port}", process, log)
        auth = {"Authorization": f"Bearer {admin}"}
        enrollment = httpx.post(base + "/enrollment-tokens", json={"name": "e"}, headers=auth).json()["token"]
        body = {"token": enrollment, "inventory": {"hostname": "h1", "addresses": ["10.1.0.1"]}}
        credential = httpx.post(base + "/agent/enroll", json=body).json()["credential"]
        httpx.get(base + "/agent/ruleset", headers={"Authorization": f"Bearer {credential}"})
        httpx.post(base + "/agent/enroll", json={**body, "token": enrollment})  # refused: used up
        httpx.get(base + "/workloads", headers={"Authorization": f"Bearer {admin}x"})  # refused: unknown
    finally:
        processes.stop(process)
    text = log.read_text()
    assert "/api/v1/agent/ruleset" in text  # the access log is on
    for secret in (admin, enrollment, credential):
        assert secret not in text and secret.rsplit("_", 1)[1] not in text
