"""Hardening of what surrounds the API (issue 15 §5), each proved against a real `microseg server`:
no third-party script on the console's origin (/docs and /redoc are gone), `X-Forwarded-For`
believed only from `--trusted-proxy`, an owner-only data directory and database files, the first
admin token kept out of logs, and the agent trusting a private CA with `--ca-file`."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from microseg.agent import client as agent_client
from microseg.agent import daemon
from microseg.cli import agent as agent_cli
from microseg.cli import main
from microseg.store import database
from tests.conftest import require
from tests.server import processes
from tests.server.conftest import Api, ok, problem

TOKEN = re.compile(r"msk_[A-Za-z0-9_-]+")
LIMIT = 30  # ServerSettings.enroll_per_minute


@dataclass
class Running:
    """One `microseg server` process: its URL, data directory and combined stdout/stderr log."""

    url: str
    data: Path
    log: Path
    process: subprocess.Popen[bytes]

    def first_token(self) -> str:
        return (self.data / "initial-admin-token").read_text().strip()


@contextmanager
def server(tmp_path: Path, *args: str, scheme: str = "http", verify: ssl.SSLContext | bool = True,
           umask: int | None = None, stderr: int | None = None) -> Iterator[Running]:  # fmt: skip
    """`microseg server` on a fresh data directory, output in a file (not a terminal, as under
    systemd), stopped at the end."""
    port, data, log = processes.free_port(), tmp_path / "data", tmp_path / "server.log"
    command = [sys.executable, "-m", "microseg", "server", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data), "--log-level", "debug", *args]  # fmt: skip
    if umask is not None:
        command = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MICROSEG_", "FORWARDED_"))}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=stderr or subprocess.STDOUT, env=env)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        processes.wait_ready(url, process, log, verify)
        yield Running(url, data, log, process)
    finally:
        processes.stop(process)


def _enroll_attempts(url: str, forwarded: list[str | None]) -> list[int]:
    """The statuses of enrollment attempts with a wrong token, one per `X-Forwarded-For` value."""
    body = {"token": "msk_enroll_wrong", "inventory": {"hostname": "h", "addresses": ["10.1.0.1"]}}
    statuses = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for value in forwarded:
            headers = {"X-Forwarded-For": value} if value else {}
            statuses.append(http.post("/api/v1/agent/enroll", json=body, headers=headers).status_code)
    return statuses


# -- 1. no CDN script on the console's origin ----------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_cdn_backed_api_pages_are_not_served(api: Api, path: str) -> None:
    answer = api.client.get(path)
    problem(answer, 404)
    assert "cdn" not in answer.text.lower()


def test_the_openapi_document_stays_and_the_console_allows_only_its_own_origin(api: Api) -> None:
    spec = ok(api.client.get("/openapi.json"))
    assert "/api/v1/agent/enroll" in spec["paths"] and "/docs" not in spec["paths"]
    page = api.client.get("/")
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)  # nothing from another origin


# -- 2. X-Forwarded-For only from trusted proxies ------------------------------------------------


def test_forwarded_addresses_from_loopback_do_not_escape_the_enrollment_limit(tmp_path: Path) -> None:
    with server(tmp_path) as running:
        statuses = _enroll_attempts(running.url, [f"198.51.100.{i}" for i in range(LIMIT + 5)])
    assert statuses == [401] * LIMIT + [429] * 5


def test_a_trusted_proxy_forwards_the_address_the_limit_counts(tmp_path: Path) -> None:
    with server(tmp_path, "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8") as running:
        rotating = _enroll_attempts(running.url, [f"198.51.100.{i}" for i in range(LIMIT + 5)])
        one_client = _enroll_attempts(running.url, ["203.0.113.7"] * (LIMIT + 1))
        others = _enroll_attempts(running.url, ["203.0.113.8", None, "203.0.113.7"])
    assert rotating == [401] * (LIMIT + 5)
    assert one_client == [401] * LIMIT + [429]
    assert others == [401, 401, 429]  # another client, the proxy itself, the limited client again


def test_a_trusted_proxy_must_be_an_address_or_network(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main.app, ["server", "--data-dir", str(tmp_path / "data"), "--trusted-proxy", "proxy.example"]
    )
    assert result.exit_code == 2 and "--trusted-proxy" in result.output
    assert not (tmp_path / "data").exists()


# -- 3. owner-only files -------------------------------------------------------------------------


def test_a_fresh_data_directory_and_every_file_in_it_are_owner_only(tmp_path: Path) -> None:
    with server(tmp_path, umask=0o022) as running:
        admin = {"Authorization": f"Bearer {running.first_token()}"}
        ok(httpx.post(running.url + "/api/v1/enrollment-tokens", json={"name": "e"}, headers=admin), 201)
        files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in running.data.iterdir()}
        directory = stat.S_IMODE(running.data.stat().st_mode)
    assert directory == 0o700
    assert {"microseg.db", "microseg.db-wal", "microseg.db-shm", "initial-admin-token"} <= set(files)
    assert files == dict.fromkeys(files, 0o600)


def test_a_database_an_older_release_left_readable_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "microseg.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    (data / "microseg.db").chmod(0o644)
    (data / "microseg.db-wal").write_bytes(b"")
    (data / "microseg.db-wal").chmod(0o664)
    db = database.Database(database.sqlite_url(data))
    with db.write() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.iterdir()}
    db.dispose()  # SQLite removes the -wal and -shm files with the last connection
    assert set(modes) == {"microseg.db", "microseg.db-wal", "microseg.db-shm"}
    assert modes == dict.fromkeys(modes, 0o600)


# -- 4. the first admin token never reaches a log -----------------------------------------------


def test_the_first_token_goes_to_an_owner_only_file_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    with server(tmp_path) as running:
        token = running.first_token()
        mode = stat.S_IMODE((running.data / "initial-admin-token").stat().st_mode)
        mine = httpx.get(running.url + "/api/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    log = running.log.read_text()
    assert mode == 0o600 and ok(mine)["items"][0]["role"] == "admin"
    assert "GET /api/v1/tokens" in log  # the debug log and the access log were on
    assert str(running.data / "initial-admin-token") in log
    assert TOKEN.findall(log) == [] and token.rsplit("_", 1)[1] not in log


def test_the_first_token_is_printed_on_a_terminal_and_nowhere_else(tmp_path: Path) -> None:
    terminal, console = pty.openpty()
    try:
        with server(tmp_path, "--log-level", "warning", stderr=console) as running:
            shown = _read_until(terminal, TOKEN, 10)
            token = TOKEN.findall(shown)[0]
            mine = httpx.get(running.url + "/api/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    finally:
        os.close(console)
        os.close(terminal)
    assert ok(mine)["items"][0]["name"] == "first-admin"
    assert not (running.data / "initial-admin-token").exists()
    assert token not in running.log.read_text()


def _read_until(fd: int, pattern: re.Pattern[str], seconds: float) -> str:
    seen = b""
    deadline = time.monotonic() + seconds
    while not pattern.search(seen.decode(errors="replace")) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 4096)
    return seen.decode(errors="replace")


# -- 5. a private CA for the agent ---------------------------------------------------------------


def _private_ca(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate it signs for 127.0.0.1, and an unrelated second CA."""
    require(shutil.which("openssl") is not None, "needs the openssl command to make test certificates")
    out = {name: folder / name for name in ("ca.crt", "ca.key", "server.crt", "server.key", "csr",
                                            "other.crt", "other.key", "ext")}  # fmt: skip
    out["ext"].write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca, key in (("ca.crt", "ca.key"), ("other.crt", "other.key")):
        _openssl("req", "-x509", *ec, "-keyout", out[key], "-out", out[ca], "-days", "1", "-subj", f"/CN=test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    _openssl("req", *ec, "-keyout", out["server.key"], "-out", out["csr"], "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", out["csr"], "-CA", out["ca.crt"], "-CAkey", out["ca.key"], "-CAcreateserial",
             "-days", "1", "-out", out["server.crt"], "-extfile", out["ext"])  # fmt: skip
    return out


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _agent(url: str, state: Path, ca_file: Path | None) -> daemon.Agent:
    """The agent as `microseg agent --server URL [--ca-file PATH]` builds it (not started)."""
    return daemon.Agent(
        daemon.AgentSettings(server=url, state_dir=state, tls_verify=agent_cli.tls_verify(ca_file))
    )


def test_the_agent_trusts_a_private_ca_given_with_ca_file_and_nothing_else(tmp_path: Path) -> None:
    pki = _private_ca(tmp_path)
    args = ["--tls-cert", str(pki["server.crt"]), "--tls-key", str(pki["server.key"])]
    trust = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    inventory = {"hostname": "tls-1", "addresses": ["10.1.0.1"]}
    with server(tmp_path, *args, scheme="https", verify=trust) as running:
        admin = {"Authorization": f"Bearer {running.first_token()}"}
        made = httpx.post(
            running.url + "/api/v1/enrollment-tokens", json={"name": "e"}, headers=admin, verify=trust
        )
        enrollment = ok(made, 201)["token"]
        refused = []
        for ca_file in (None, pki["other.crt"]):
            agent = _agent(running.url, tmp_path / f"refused-{len(refused)}", ca_file)
            with pytest.raises(agent_client.Unreachable) as failure:
                agent.client.enroll(enrollment, inventory)
            agent.client.close()
            refused.append(str(failure.value))
        agent = _agent(running.url, tmp_path / "agent", pki["ca.crt"])
        enrolled = agent.client.enroll(enrollment, inventory)
        agent.client.heartbeat(inventory)
        agent.client.close()
    assert all("CERTIFICATE_VERIFY_FAILED" in reason for reason in refused), refused
    assert enrolled["workload"] == "tls-1" and enrolled["credential"].startswith("msa_")


def test_an_unreadable_ca_file_stops_the_agent_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    for path in (tmp_path / "missing.pem", tmp_path / "not-a-ca.pem"):
        result = CliRunner().invoke(main.app, ["agent", "--server", "https://127.0.0.1:1", "--ca-file", str(path),
                                               "--state-dir", str(tmp_path / "state")])  # fmt: skip
        assert result.exit_code == 2 and "--ca-file" in result.output, result.output
    result = CliRunner().invoke(main.app, ["agent", "--server", "https://127.0.0.1:1"],
                                env={"MICROSEG_CA_FILE": str(tmp_path / "missing.pem")})  # fmt: skip
    assert result.exit_code == 2 and "missing.pem" in result.output, result.output
