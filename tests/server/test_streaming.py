"""SIEM streaming from a real server to real receivers on loopback: syslog over UDP, TCP and TLS
(RFC 5424 and CEF, parsed back), a signed webhook that fails on purpose, a JSON-lines file; a
restart while the receiver is down loses nothing; a sink past its bound skips and says so; two
replicas stream once; bad URLs stop the start-up; the formatters escape what their standards say."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.server
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from microseg import errors
from microseg.server import app as server_app
from microseg.server.streaming import formats, items, specs
from microseg.store import audit, database, tokens
from tests.server import running
from tests.server.conftest import Api, make_settings, ok
from tests.server.estates import workload
from tests.server.test_flow_summary import enroll, flow, send

SECRET = "s3cret-for-tests"
SECRET_ENV = "MICROSEG_TEST_WEBHOOK_SECRET"
FAST = "backoff=0.05&backoff_max=0.3"
"""Retry quickly: the tests wait for recoveries."""


# -- receivers ----------------------------------------------------------------------------------


class UdpListener:
    """Datagrams received on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while self.running:
            try:
                self.messages.append(self.sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:  # closed
                return

    def close(self) -> None:
        self.running = False
        self.sock.close()


class StreamListener:
    """Octet-counted syslog frames over TCP, or TLS with `context`."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port, self.context = self.server.getsockname()[1], context
        self.messages: list[bytes] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a peer that goes away mid-frame
            self._frames(conn)

    def _frames(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
        buffer = b""
        with conn:
            while data := conn.recv(65536):
                buffer += data
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    self.messages.append(rest[: int(length)])
                    buffer = rest[int(length) :]

    def close(self) -> None:
        self.running = False
        self.server.close()


class WebhookReceiver:
    """An HTTP receiver that checks the signature, fails the first `fail` requests with 500 (or
    refuses the first `refuse` with 400), and can be stopped and started again on the same port."""

    def __init__(self, fail: int = 0, refuse: int = 0) -> None:
        self.fail, self.refuse, self.requests, self.bad_signatures = fail, refuse, 0, 0
        self.items: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.port = 0
        self.httpd: http.server.ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if not verified(
                    self.headers["X-Microseg-Timestamp"], self.headers["X-Microseg-Signature"], body
                ):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.refuse > 0:
                    receiver.refuse -= 1
                    receiver.refused += json.loads(body)["items"]
                    self.send_response(400)
                elif receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.items += json.loads(body)["items"]
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, query: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook?secret_env={SECRET_ENV}&{FAST}&{query}"


def verified(stamp: str, header: str, body: bytes) -> bool:
    """What a receiver does: recompute the HMAC over `stamp.body`, refuse old timestamps."""
    expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header) and abs(time.time() - int(stamp)) < 300


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


# -- a real server ------------------------------------------------------------------------------


@contextmanager
def serving(url: str, *streams: str) -> Iterator[Api]:
    """A server over the database at `url` streaming to `streams`, with an admin token."""
    db = database.Database(url)
    app = server_app.create_app(make_settings(url, streams=streams), db)
    with running.serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        with db.write() as conn:
            admin = tokens.create_api(conn, "test-admin", "admin", "test")[1]
        yield Api(client, db, {"admin": admin})
    db.dispose()


def wait_for(what: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def produce(api: Api) -> None:
    """A blocked flow (a flow item and a `blocked` event) and a quarantine (audit and event)."""
    agent = enroll(api, "web-1", "10.88.0.10", {"app": "crm"})
    assert send(agent, "b-1", flow("192.0.2.7", "10.88.0.10", 22, time.time(), verdict="blocked",
                                   rule="security/no-ssh", process="/usr/sbin/sshd"),
                flow("192.0.2.8", "10.88.0.10", 443, time.time()))  # fmt: skip
    ok(api.post("/workloads/web-1/quarantine", {"reason": 'EDR says "bad" [sev=high]'}))


def add_workloads(api: Api, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        ok(api.post("/workloads", workload(f"vm-{n}", f"10.99.0.{n + 1}", {"app": "x"})), 201)


def audit_ids(db: database.Database) -> list[str]:
    with db.read() as conn:
        return [f"audit:{r['id']}" for r in audit.query(conn, limit=10_000)]


# -- parsing what arrived -----------------------------------------------------------------------

SYSLOG = re.compile(r"<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) microseg - (?P<msgid>\S+) (?P<rest>.*)", re.S)
SD_PARAM = re.compile(r' ([^=\s\]"]+)="((?:[^"\\]|\\.)*)"')


def parse_syslog(message: bytes) -> dict[str, Any]:
    """Header fields, SD params (unescaped) and MSG of one RFC 5424 message."""
    found = SYSLOG.fullmatch(message.decode())
    assert found, message
    rest, params = found["rest"], {}
    if rest.startswith("[microseg@32473"):
        end = _sd_end(rest)
        params = {
            k: re.sub(r"\\(.)", r"\1", v) for k, v in SD_PARAM.findall(rest[len("[microseg@32473") : end])
        }
        rest = rest[end + 1 :]
    else:
        assert rest.startswith("- ")
        rest = rest[1:]
    return {**found.groupdict(), "sd": params, "msg": rest[1:]}


def _sd_end(text: str) -> int:
    escaped, quoted = False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "]" and not quoted:
            return index
    raise AssertionError(f"no end of the structured data in {text!r}")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """The seven header fields (unescaped) and the extension of one CEF line."""
    fields: list[str] = []
    current, index = "", 0
    while len(fields) < 7:
        char = line[index]
        if char == "\\":
            current += line[index + 1]
            index += 2
            continue
        if char == "|":
            fields.append(current)
            current = ""
        else:
            current += char
        index += 1
    extension = line[index:]
    pairs = re.findall(r"(\w+)=((?:[^\\=]|\\.)*?)(?= \w+=|$)", extension)
    unescape = {"n": "\n", "r": "\r"}
    return fields, {k: re.sub(r"\\(.)", lambda m: unescape.get(m[1], m[1]), v) for k, v in pairs}


def mentions(listener: UdpListener | StreamListener, text: bytes, count: int) -> bool:
    return sum(text in m for m in listener.messages) >= count


def by_msgid(messages: list[bytes], msgid: str) -> dict[str, Any]:
    parsed = [parse_syslog(m) for m in messages]
    return next(p for p in parsed if p["msgid"] == msgid)


# -- tests --------------------------------------------------------------------------------------


def test_syslog_over_udp_tcp_and_tls_and_a_jsonl_file_receive_events_audit_and_blocked_flows(
    database_url: str, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    udp, tcp, tls = UdpListener(), StreamListener(), StreamListener(context)
    lines = tmp_path / "siem.jsonl"
    sinks = (f"syslog+udp://127.0.0.1:{udp.port}?facility=local4",
             f"syslog+tcp://127.0.0.1:{tcp.port}?format=cef&{FAST}",
             f"syslog+tls://127.0.0.1:{tls.port}?ca={cert}&what=events,flows&{FAST}", f"file://{lines}")  # fmt: skip
    try:
        with serving(database_url, *sinks) as api:
            produce(api)
            for listener, count in ((udp, 2), (tcp, 2), (tls, 1)):  # audit and event; TLS: no audit
                wait_for(functools.partial(mentions, listener, b"quarantine", count))
            wait_for(lambda: lines.exists() and b'"kind":"quarantine"' in lines.read_bytes())
    finally:
        for listener in (udp, tcp, tls):
            listener.close()

    blocked = by_msgid(udp.messages, "blocked")
    flow_sd = next(p["sd"] for p in map(parse_syslog, udp.messages) if p["sd"].get("source") == "flows")
    assert int(blocked["pri"]) == 20 * 8 + 4  # local4, warning
    assert (flow_sd["src"], flow_sd["dst"], flow_sd["dport"], flow_sd["proto"]) == ("192.0.2.7", "10.88.0.10",
                                                                                    "22", "tcp")  # fmt: skip
    assert (flow_sd["verdict"], flow_sd["rule"], flow_sd["kind"]) == ("blocked", "security/no-ssh", "blocked")
    assert flow_sd["id"].startswith("flows:") and flow_sd["workload"] == "web-1"
    assert sum(p["sd"].get("source") == "flows" for p in map(parse_syslog, udp.messages)) == 1  # not allowed
    audited = [p for p in map(parse_syslog, udp.messages) if p["sd"]["id"].startswith("audit:")]
    quarantined = next(p for p in audited if p["msgid"] == "quarantine")
    reason = json.loads(quarantined["sd"]["details"])["reason"]
    assert reason == 'EDR says "bad" [sev=high]'  # escaped, and intact once unescaped

    cef = [parse_cef(parse_syslog(m)["msg"]) for m in tcp.messages]
    header, ext = next((h, e) for h, e in cef if h[4] == "flows:blocked")
    assert header[:4] == ["CEF:0", "microseg", "microseg", header[3]] and header[6] == "5"
    assert (ext["src"], ext["dst"], ext["dpt"], ext["proto"], ext["act"], ext["cs1"], ext["cs1Label"]) == (
        "192.0.2.7", "10.88.0.10", "22", "TCP", "blocked", "security/no-ssh", "rule")  # fmt: skip
    assert ext["dproc"] == "/usr/sbin/sshd" and ext["externalId"].startswith("flows:")
    _, audit_ext = next((h, e) for h, e in cef if h[4] == "audit:quarantine")
    assert audit_ext["suser"] and json.loads(audit_ext["cs4"])["reason"] == 'EDR says "bad" [sev=high]'

    tls_sources = {parse_syslog(m)["sd"]["source"] for m in tls.messages}
    assert tls_sources == {"events", "flows"}  # what=events,flows: no audit
    written = [json.loads(line) for line in lines.read_text().splitlines()]
    assert {d["source"] for d in written} == {"events", "audit", "flows"}
    assert len({d["id"] for d in written}) == len(written)
    ids = [d["seq"] for d in written if d["source"] == "events"]
    assert ids == sorted(ids) and next(d for d in written if d["source"] == "flows")["dport"] == 22


def test_a_webhook_is_signed_and_retried_until_it_takes_the_items(database_url: str) -> None:
    receiver = WebhookReceiver(fail=3)
    try:
        with serving(database_url, receiver.url("what=audit")) as api:
            add_workloads(api, 3)
            wait_for(lambda: len(receiver.items) >= 3)
            expected = audit_ids(api.db)
    finally:
        receiver.stop()
    assert receiver.requests >= 4 and receiver.bad_signatures == 0 and receiver.fail == 0
    assert [i["id"] for i in receiver.items] == expected  # every record once, in order
    assert receiver.items[0]["source"] == "audit" and receiver.items[0]["kind"] == "create"


def test_a_webhook_refusing_with_4xx_is_not_retried(database_url: str) -> None:
    receiver = WebhookReceiver(refuse=1)
    try:
        with serving(database_url, receiver.url("what=audit")) as api:
            add_workloads(api, 2)
            wait_for(lambda: receiver.requests >= 1)
            add_workloads(api, 1, start=2)
            expected = audit_ids(api.db)
            wait_for(lambda: expected[-1] in [i["id"] for i in receiver.items])
            time.sleep(0.3)
    finally:
        receiver.stop()
    refused, taken = [i["id"] for i in receiver.refused], [i["id"] for i in receiver.items]
    assert refused and refused + taken == expected  # the refused page was skipped, never sent again


def test_a_restart_while_the_webhook_is_down_loses_nothing(database_url: str) -> None:
    receiver = WebhookReceiver()
    sink = receiver.url("what=audit")
    with serving(database_url, sink) as api:
        add_workloads(api, 2)
        wait_for(lambda: len(receiver.items) == 2)
        receiver.stop()
        add_workloads(api, 2, start=2)
    with serving(database_url, sink) as api:  # a new process, the same database
        add_workloads(api, 2, start=4)
        receiver.start()
        try:
            wait_for(lambda: len(receiver.items) >= 6)
            time.sleep(0.5)  # anything sent twice would arrive by now
            expected = audit_ids(api.db)
        finally:
            receiver.stop()
    assert len(expected) == 6 and [i["id"] for i in receiver.items] == expected  # once each, in order


def test_a_sink_past_its_bound_skips_the_oldest_and_says_how_many(database_url: str, tmp_path: Path) -> None:
    lines = tmp_path / "late.jsonl"
    with serving(database_url) as api:
        add_workloads(api, 8)
        expected = audit_ids(api.db)
    with serving(database_url, f"file://{lines}?what=audit&bound=3"):
        wait_for(lambda: lines.exists() and len(lines.read_text().splitlines()) >= 4)
        time.sleep(0.3)
    written = [json.loads(line) for line in lines.read_text().splitlines()]
    notice, rest = written[0], written[1:]
    assert (notice["source"], notice["kind"], notice["of"]) == ("stream", "dropped", "audit")
    assert notice["details"]["skipped"] == 5 and notice["details"]["bound"] == 3
    assert [d["id"] for d in rest] == expected[-3:]


def test_two_replicas_stream_each_item_once(database_url: str, tmp_path: Path) -> None:
    lines = tmp_path / "shared.jsonl"
    sink = f"file://{lines}?what=audit"
    with serving(database_url, sink) as one, serving(database_url, sink) as two:
        add_workloads(one, 3)
        add_workloads(two, 3, start=3)
        wait_for(lambda: lines.exists() and len(lines.read_text().splitlines()) >= 6)
        time.sleep(0.6)
        expected = audit_ids(one.db)
    assert [json.loads(line)["id"] for line in lines.read_text().splitlines()] == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("syslog+udp://127.0.0.1:514?format=xml", "format 'xml'"),
        ("gopher://siem:70", "unknown scheme"),
        ("syslog+tcp://127.0.0.1:601?fromat=cef", "unknown parameter 'fromat'"),
        ("https://siem.example/hook?secret_env=MICROSEG_TEST_UNSET", "MICROSEG_TEST_UNSET is not set"),
        ("file://relative/path", "file:///absolute/path"),
        ("syslog+tls://127.0.0.1?ca=/nonexistent.pem", "ca= file not found"),
        ("file:///tmp/x.jsonl?what=events,logins", "what= takes"),
        ("file:///tmp/x.jsonl?flows=denied", "flows= takes"),
    ],
    ids=["format", "scheme", "typo", "secret", "relative-file", "ca", "what", "flows"],
)
def test_a_bad_sink_url_stops_the_start_up_naming_the_setting(tmp_path: Path, url: str, says: str) -> None:
    settings = make_settings(database.sqlite_url(tmp_path), streams=(url,))
    with pytest.raises(errors.UserError, match=re.escape(says)) as caught:
        server_app.create_app(settings, migrate_schema=False)
    assert specs.SETTING in str(caught.value)


def test_a_webhook_passes_its_own_query_on_and_keeps_ours() -> None:
    spec = specs.parse_one("https://u:pw@siem.example/in?token=abc&what=audit&bound=10", {})
    assert spec.target == "https://u:pw@siem.example/in?token=abc"
    assert (spec.what, spec.bound, spec.name) == (("audit",), 10, "https://siem.example:443/in")


# -- the formatters -----------------------------------------------------------------------------

EVENT = items.Item("events", 7, 1_700_000_000.25, "tamper", 'rule "x" changed ] \\ here', "web-1",
                   details={"summary": "a]b"})  # fmt: skip


def test_rfc5424_escapes_sd_values_and_keeps_the_header_printable() -> None:
    text = formats.rfc5424(EVENT, host="my host").decode()
    parsed = parse_syslog(text.encode())
    assert parsed["pri"] == str(16 * 8 + 2) and parsed["ts"] == "2023-11-14T22:13:20.250000Z"
    assert parsed["host"] == "my_host" and parsed["msgid"] == "tamper"
    assert '\\"' not in parsed["msg"] and parsed["msg"] == EVENT.message
    assert parsed["sd"]["id"] == "events:7" and json.loads(parsed["sd"]["details"]) == {"summary": "a]b"}
    assert formats.sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'


def test_rfc5424_shortens_a_long_message_at_a_character_and_then_the_structured_data() -> None:
    long = items.Item("events", 1, 0.0, "blocked", "é" * 2000, "w", details={"big": "x" * 3000})
    short = formats.rfc5424(long, host="h", max_bytes=1200)
    assert len(short) <= 1200 and short.decode()  # still valid UTF-8
    parsed = parse_syslog(short)
    assert parsed["sd"] == {"id": "events:1", "source": "events", "kind": "blocked", "truncated": "true"}
    fits = items.Item("events", 1, 0.0, "blocked", "é" * 2000, "w")
    assert parse_syslog(formats.rfc5424(fits, host="h", max_bytes=600))["sd"]["workload"] == "w"


def test_cef_escapes_pipes_in_the_header_and_equals_in_the_extension() -> None:
    item = items.Item("audit", 3, 0.0, "put", "alice put a|b=c\\d\nnext", None,
                      {"actor": "alice=admin", "target": "Rule/x|y"}, {"k": "v"})  # fmt: skip
    line = formats.cef(item)
    assert "|alice put a\\|b=c\\\\d next|" in line
    header, ext = parse_cef(line)
    assert header[4] == "audit:put" and header[5] == "alice put a|b=c\\d next" and header[6] == "3"
    assert ext["suser"] == "alice=admin" and ext["cs3"] == "Rule/x|y" and ext["msg"] == item.message
    assert formats.cef_value("a=b\\c\r\nd") == "a\\=b\\\\c\\nd" and formats.cef_header("a|b\\") == "a\\|b\\\\"


def test_cef_puts_ipv6_addresses_in_their_own_keys() -> None:
    row = {"id": 5, "at": 0.0, "workload": "w", **flow("2001:db8::1", "10.0.0.1", 53, 0.0, verdict="would-block",
                                                        proto="udp")}  # fmt: skip
    _, ext = parse_cef(formats.cef(items.of_row("flows", {**row, "rule": None, "process": None})))
    assert ext["c6a2"] == "2001:db8::1" and ext["dst"] == "10.0.0.1" and "src" not in ext
    assert ext["act"] == "would-block" and ext["proto"] == "UDP" and "cs1" not in ext
