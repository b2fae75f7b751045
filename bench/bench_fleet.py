"""The 10,000-agent fleet bench (issue #17, one server replica): enrollment, the long-poll fan-out
of a one-rule change, a relabel, API latency during the fan-out and the server's memory, all
through the public HTTP API of a real `microseg server` process.

Fed by bench/bench_server.py (`run`, once per backend, stored under `runs.<backend>.fleet`) or run
alone; feeds bench/targets.py's fleet rows. Steps:

1. an admin token made in the store (the only thing not done over HTTP: a new database has no
   token a bench could read), a policy of 200 label rules (`FLOWS` per app and env, over the keys
   app, role and env) plus one rule every document holds, applied and provisioned; one reusable
   enrollment token per label group (app x role x env); N agents enroll `ENROLL_CONCURRENCY` at a
   time, each with its own hostname, a data address in 10.78.0.0/16 and its own loopback source
   address (127.78.x.y), so that the per-address enrollment limit (30 a minute, not configurable)
   sees N hosts, as it would in a real estate;
2. N simulated agents (one asyncio keep-alive connection each, a few hundred bytes of state) fetch
   their document, then long-poll `known=<hash>&wait=60` accepting deltas; every response's bytes
   (head and body) are counted per phase; every agent tracks the new hash, every `VERIFY_EVERY`-th
   (every agent at N <= 500) applies each delta to the JSON it holds and checks the result with
   `RulesetDocument.from_dict` (the hash check): a mismatch fails the bench;
3. with every long-poll parked (`microseg_feed_waiting`), the server's VmRSS and VmHWM; then one
   provision that edits the rule every document holds, timed from the request until the last
   agent has its new hash, while another process polls `/metrics` and `GET /workloads?limit=100`
   (10 per s each, one thread each, each waiting for its answer before the next: p99 is over
   `api_samples`) and records latencies; then, every poll parked again, the same change once more
   without the poller (`unpolled_*`: what the polling costs the fan-out);
4. every poll parked again, one workload relabelled (`POST /labels/bulk`), timed until the last
   agent whose document changed has it (arrivals are collected until `QUIET_S` pass without one).

Wall-clock figures include waiting for a CPU on a shared machine; the server's CPU seconds per
phase (`*_server_cpu_s`, from /proc/<pid>/stat) are the steadier figure to compare runs by.

Does not: run agents' data planes (nothing is sent to the 10.78 addresses), judge targets
(bench/report.py does), or start more than one replica.

The admin client, the poller and the agents share the machine with the server: at 10,000 agents
the agents' own CPU during a fan-out is reported (`fan_out_bench_cpu_s`) to show they kept up.

Run alone: .venv/bin/python bench/bench_fleet.py [--agents N] [--backends sqlite,postgres]
[--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import processes

from microseg.model import ruleset, rulesetdelta
from microseg.store import database, migrate, tokens

APPS = tuple(f"app{i}" for i in range(10))
ROLES = ("web", "api", "db", "cache", "queue")
ENVS = ("prod", "stage", "dev", "test")
FLOWS = (("web", "api", 8443), ("api", "db", 5432), ("api", "cache", 6379), ("api", "queue", 5672),
         ("queue", "api", 9000))  # fmt: skip
"""Per app and env, who talks to whom on which port: 5 x 10 apps x 4 envs = 200 label rules."""
EVERY_RULE = "bench-every"
"""The rule every document holds (any -> any on one port); the timed change edits its port."""
ENROLL_CONCURRENCY = 8
CONNECT_CONCURRENCY = 32
"""First fetches in flight at once while agents connect (keeps the listen backlog short)."""
VERIFY_EVERY = 100
UNPOLLED = ("seconds_to_last_agent", "seconds_to_median_agent", "fan_out_server_cpu_s", "fan_out_bench_cpu_s",
            "bytes_sent_mb")  # fmt: skip
"""Figures of the second, unpolled fan-out (stored as `unpolled_<name>`)."""
QUIET_S = 5.0
LONG_POLL_S = 60
API_POLL_INTERVAL_S = 0.1
ACCEPT = f"{rulesetdelta.MEDIA_TYPE}, application/json"


def group(index: int) -> tuple[str, str, str]:
    """Agent `index`'s label group (app, role, env); groups are filled round-robin."""
    g = index % (len(APPS) * len(ROLES) * len(ENVS))
    return APPS[g % len(APPS)], ROLES[g // len(APPS) % len(ROLES)], ENVS[g // (len(APPS) * len(ROLES))]


def data_address(index: int) -> str:
    """The address agent `index` reports (data only: nothing is sent to it)."""
    return f"10.78.{index // 250}.{index % 250 + 1}"


def source_address(index: int) -> str:
    """The loopback address agent `index` connects from (all of 127/8 reaches the server)."""
    return f"127.78.{index // 250}.{index % 250 + 1}"


def hostname(index: int) -> str:
    app, role, env = group(index)
    return f"{env}-{app}-{role}-{index:05d}"


# -- the policy -------------------------------------------------------------------------------


def _rule(name: str, priority: int, source: Any, target: Any, port: int) -> dict[str, Any]:
    spec = {"tier": "application", "priority": priority, "action": "allow", "from": source, "to": target,
            "services": [{"port": port}]}  # fmt: skip
    return {"apiVersion": "microseg.io/v1", "kind": "Rule", "metadata": {"name": name}, "spec": spec}


def policy() -> list[dict[str, Any]]:
    """The label rules of every app and env, and the rule every document holds."""
    docs = []
    for a, app in enumerate(APPS):
        for e, env in enumerate(ENVS):
            for f, (src, dst, port) in enumerate(FLOWS):
                priority = 10 * ((a * len(ENVS) + e) * len(FLOWS) + f + 1)
                docs.append(_rule(f"{app}-{env}-{src}-{dst}", priority,
                                  [{"selector": f"app={app},env={env},role={src}"}],
                                  [{"selector": f"app={app},env={env},role={dst}"}], port))  # fmt: skip
    docs.append(every_rule(12345))
    return docs


def every_rule(port: int) -> dict[str, Any]:
    return _rule(EVERY_RULE, 999_990, "any", "any", port)


# -- a minimal HTTP/1.1 client over asyncio streams ---------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    size: int
    """Bytes on the wire: head and body."""


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Reply(int(lines[0].split()[1]), headers, body, len(head) + length)


def request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- enrollment -------------------------------------------------------------------------------


async def enroll_all(
    port: int, enrollment: dict[tuple[str, str, str], str], count: int
) -> tuple[list[str], list[float], list[str]]:
    """Enroll `count` agents, `ENROLL_CONCURRENCY` at a time, each on a new connection from its
    own source address; answers the credentials, each enrollment's completion time and errors."""
    credentials = [""] * count
    done = [0.0] * count
    errors: list[str] = []
    finished = [0]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            inventory = {"hostname": hostname(i), "addresses": [data_address(i)], "os": "linux", "kind": "vm"}
            body = json.dumps({"token": enrollment[group(i)], "inventory": inventory}).encode()
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source_address(i), 0)
                )
                close = {"Content-Type": "application/json", "Connection": "close"}
                writer.write(request("POST", "/api/v1/agent/enroll", close, body))
                reply = await read_reply(reader)
                writer.close()
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{hostname(i)}: {exc!r}")
                continue
            done[i] = time.perf_counter()
            finished[0] += 1
            if finished[0] % max(1, count // 10) == 0:
                print(f"fleet: {finished[0]} of {count} enrolled", flush=True)
            if not 200 <= reply.status < 300:
                errors.append(f"{hostname(i)}: {reply.status} {reply.body[:200]!r}")
                continue
            credentials[i] = json.loads(reply.body)["credential"]

    await asyncio.gather(*(worker() for _ in range(ENROLL_CONCURRENCY)))
    return credentials, done, errors


def tenth_rates(started: float, done: list[float]) -> list[float]:
    """Enrollments per second in each tenth of the run (by completion order)."""
    times = sorted(t for t in done if t)
    if len(times) < 10:
        return []
    rates, before = [], started
    for k in range(1, 11):
        last = len(times) * k // 10
        first = len(times) * (k - 1) // 10
        end = times[last - 1]
        rates.append((last - first) / max(end - before, 1e-9))
        before = end
    return rates


# -- the simulated agents -------------------------------------------------------------------------


@dataclass
class Fleet:
    """What every simulated agent reports to the bench: arrivals and bytes per phase."""

    count: int
    phase: str = "first"
    hashes: list[str] = field(default_factory=list)
    arrivals: dict[str, dict[int, float]] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    body_bytes: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)
    deltas: dict[str, int] = field(default_factory=dict)
    verified: int = 0
    errors: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    want: int = 0
    """The phase is complete (`changed` set) when this many agents have arrived in it."""

    def __post_init__(self) -> None:
        self.hashes = [""] * self.count

    def enter(self, phase: str, want: int) -> None:
        self.phase, self.want = phase, want
        self.changed = asyncio.Event()
        self.arrivals[phase] = {}

    def count_bytes(self, reply: Reply) -> None:
        p = self.phase
        self.bytes[p] = self.bytes.get(p, 0) + reply.size
        self.body_bytes[p] = self.body_bytes.get(p, 0) + len(reply.body)
        self.responses[p] = self.responses.get(p, 0) + 1

    def arrived(self, index: int, new_hash: str, delta: bool) -> None:
        self.hashes[index] = new_hash
        arrivals = self.arrivals.setdefault(self.phase, {})
        arrivals[index] = time.perf_counter()
        if delta:
            self.deltas[self.phase] = self.deltas.get(self.phase, 0) + 1
        if self.want and len(arrivals) >= self.want:
            self.changed.set()


def _etag(reply: Reply) -> str:
    return reply.headers.get("etag", "").strip('"')


def _take(
    fleet: Fleet, index: int, reply: Reply, held: dict[str, Any] | None, verify: bool
) -> dict[str, Any] | None:
    """Track the document `reply` brings; a verifying agent rebuilds it from the JSON it `held`
    and checks it. Answers the JSON the agent now holds (None for an agent that does not verify)."""
    delta = reply.headers.get("content-type", "").startswith(rulesetdelta.MEDIA_TYPE)
    new_hash = _etag(reply)
    if verify:
        data = json.loads(reply.body)
        doc = rulesetdelta.apply(held or {}, data) if delta else data
        checked = ruleset.RulesetDocument.from_dict(doc)  # raises on a hash mismatch
        if checked.hash != new_hash:
            raise AssertionError(f"agent {index}: ETag {new_hash} but the document is {checked.hash}")
        fleet.verified += 1
        held = doc
    fleet.arrived(index, new_hash, delta)
    return held


async def agent(
    port: int, index: int, credential: str, *, verify: bool, fleet: Fleet, gate: asyncio.Semaphore
) -> None:
    """One agent: fetch the document, then long-poll for changes until cancelled; anything but a
    200 or 304, a lost connection or a failed check is recorded in `fleet.errors`."""
    headers = {"Authorization": f"Bearer {credential}", "Accept": ACCEPT}
    writer = None
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source_address(index), 0)
            )
            writer.write(request("GET", "/api/v1/agent/ruleset", headers))
            reply = await read_reply(reader)
        held = None
        while True:
            fleet.count_bytes(reply)
            if reply.status == 200:
                held = _take(fleet, index, reply, held, verify)  # raises on a failed check
            elif reply.status != 304:
                fleet.errors.append(f"agent {index}: {reply.status} {reply.body[:200]!r}")
                return
            target = f"/api/v1/agent/ruleset?known={fleet.hashes[index]}&wait={LONG_POLL_S}"
            writer.write(request("GET", target, headers))
            reply = await read_reply(reader)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # recorded: the bench fails on any after the run
        fleet.errors.append(f"agent {index}: {exc!r}")
    finally:
        if writer is not None:
            writer.close()


# -- the API poller (its own process: the agents' event loop must not delay its timings) ----------


def poll_api(base: str, admin: str, go: Any, stop: Any, out: Connection) -> None:
    """Once `go` is set, poll `/metrics` and `GET /api/v1/workloads?limit=100`, each from its own
    thread every `API_POLL_INTERVAL_S` (a slow answer on one path does not thin out the other's
    samples), until `stop` is set; send "ready" once warm, then the latencies (ms) per path."""
    paths = ("/metrics", "/api/v1/workloads?limit=100")
    found: dict[str, list[float]] = {p: [] for p in paths}
    bad: list[str] = []
    clients = {p: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
               for p in paths}  # fmt: skip
    for p, http in clients.items():  # connected and warm before the timed window
        http.get(p)
    out.send("ready")
    go.wait()

    def poll(p: str) -> None:
        next_at = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            status: int | str
            try:
                status = clients[p].get(p).status_code
            except httpx.HTTPError as exc:  # a timeout is a sample too (at least the timeout)
                status = repr(exc)
            found[p].append((time.perf_counter() - started) * 1000)
            if status != 200:
                bad.append(f"{p}: {status}")
            next_at = max(next_at + API_POLL_INTERVAL_S, time.perf_counter())
            time.sleep(max(0.0, next_at - time.perf_counter()))

    threads = [threading.Thread(target=poll, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for http in clients.values():
        http.close()
    out.send({"latencies": found, "errors": bad})
    out.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.999999) - 1))], 1)


# -- the server process ----------------------------------------------------------------------------


def server_pid(port: int) -> int:
    """The pid of the server child this process started on `port`."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if ppid == me and b"--port" in argv and argv[argv.index(b"--port") + 1] == str(port).encode():
                return int(entry.name)
    raise RuntimeError(f"no server child on port {port}")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid`, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """This process's CPU seconds (the simulated agents: were they keeping up?)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def raise_nofile() -> int:
    """The soft open-files limit raised to the hard one (the server child inherits it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the run ------------------------------------------------------------------------------------


async def _waiting(api: httpx.AsyncClient) -> int:
    text = (await api.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("microseg_feed_waiting "))
    return int(float(line.split()[1]))


async def _until_parked(api: httpx.AsyncClient, count: int, fleet: Fleet, timeout: float = 1800) -> None:
    """Until the server counts `count` waiting long-polls. /metrics costs the server a pass over
    every agent, so it is asked only once every agent has its first document (seen here)."""
    deadline = time.monotonic() + timeout
    while not fleet.changed.is_set():
        if fleet.errors:
            raise RuntimeError(f"agents failed: {fleet.errors[:5]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(fleet.arrivals['first'])} of {count} agents have a document")
        await asyncio.sleep(0.2)
    while await _waiting(api) < count:
        if fleet.errors:
            raise RuntimeError(f"agents failed: {fleet.errors[:5]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await _waiting(api)} of {count} long-polls parked")
        await asyncio.sleep(1.0)


async def _setup(api: httpx.AsyncClient) -> dict[tuple[str, str, str], str]:
    """Apply and provision the policy; one reusable enrollment token per label group."""
    answer = await api.post("/api/v1/apply", json={"documents": policy()})
    assert answer.status_code == 200, answer.text
    answer = await api.post("/api/v1/versions", json={"note": "fleet v1"})
    assert answer.status_code == 201, answer.text
    found = {}
    for app in APPS:
        for role in ROLES:
            for env in ENVS:
                body = {"name": f"fleet-{app}-{role}-{env}", "labels": {"app": app, "role": role, "env": env},
                        "reusable": True, "addressRanges": ["10.78.0.0/16"]}  # fmt: skip
                answer = await api.post("/api/v1/enrollment-tokens", json=body)
                assert answer.status_code == 201, answer.text
                found[(app, role, env)] = answer.json()["token"]
    return found


async def _phase(fleet: Fleet, name: str, want: int, act: Any, bound: float) -> tuple[float, float]:
    """Enter phase `name`, run `act` (an awaitable factory), wait until `want` agents arrived;
    answers (seconds from the request to the last arrival, seconds the request took)."""
    fleet.enter(name, want)
    started = time.perf_counter()
    await act()
    took = time.perf_counter() - started
    deadline = started + bound
    while not fleet.changed.is_set():
        got = len(fleet.arrivals[name])
        if fleet.errors:
            raise RuntimeError(f"{name}: {got} of {want} agents updated; failed: {fleet.errors[:5]}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name}: {got} of {want} agents got their update within {bound} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.changed.wait(), 0.5)
    return max(fleet.arrivals[name].values()) - started, took


async def _quiet_phase(fleet: Fleet, name: str, act: Any, quiet: float) -> tuple[float, float, int]:
    """Like `_phase` for a change that reaches an unknown number of agents: arrivals are collected
    until `quiet` seconds pass without one."""
    fleet.enter(name, 0)
    started = time.perf_counter()
    await act()
    took = time.perf_counter() - started
    seen = -1
    while len(fleet.arrivals[name]) != seen:
        seen = len(fleet.arrivals[name])
        await asyncio.sleep(quiet)
    arrivals = fleet.arrivals[name]
    return (max(arrivals.values()) - started if arrivals else 0.0), took, len(arrivals)


async def _enroll_phase(
    api: httpx.AsyncClient, port: int, count: int, pid: int
) -> tuple[list[str], dict[str, Any]]:
    """Set up the policy and tokens, enroll `count` agents; their credentials and the figures."""
    enrollment = await _setup(api)
    cpu, started = cpu_s(pid), time.perf_counter()
    credentials, done, errors = await enroll_all(port, enrollment, count)
    took = time.perf_counter() - started
    rates = tenth_rates(started, done)
    print(f"fleet: enrolled {count - len(errors)} of {count} in {took:.1f} s; tenths "
          f"{[round(r) for r in rates]} per s; {len(errors)} errors", flush=True)  # fmt: skip
    return (
        credentials,
        {
            "enroll_s": round(took, 2),
            "enroll_overall_per_s": round(count / took, 1),
            "enroll_per_s": round(min(rates), 1) if rates else None,  # sustained: the slowest tenth
            "enroll_first_tenth_per_s": round(rates[0], 1) if rates else None,
            "enroll_last_tenth_per_s": round(rates[-1], 1) if rates else None,
            "enroll_errors": len(errors),
            "enroll_error_examples": errors[:5],
            "enroll_server_cpu_s": round(cpu_s(pid) - cpu, 2),
        },
    )


async def _connect_phase(
    api: httpx.AsyncClient, port: int, credentials: list[str], pid: int
) -> tuple[Fleet, list[asyncio.Task[None]], dict[str, Any]]:
    """Start every agent, wait until every long-poll is parked; the server's memory then."""
    count = len(credentials)
    fleet = Fleet(count)
    fleet.enter("first", count)
    verify_every = 1 if count <= 500 else VERIFY_EVERY
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    cpu, started = cpu_s(pid), time.perf_counter()
    tasks = [asyncio.create_task(agent(port, i, c, verify=i % verify_every == 0, fleet=fleet, gate=gate))
             for i, c in enumerate(credentials)]  # fmt: skip
    await _until_parked(api, count, fleet)
    memory = memory_mb(pid)
    print(f"fleet: {count} parked; server RSS {memory}", flush=True)
    return (
        fleet,
        tasks,
        {
            "connect_s": round(time.perf_counter() - started, 2),
            "first_fetch_server_cpu_s": round(cpu_s(pid) - cpu, 2),
            "first_fetch_mb": round(fleet.bytes["first"] / 1e6, 2),
            "document_kb_mean": round(fleet.body_bytes["first"] / count / 1e3, 2),
            "rss_mb": memory["VmRSS"],
            "rss_hwm_mb": memory["VmHWM"],
            "verified_agents": len(range(0, count, verify_every)),
        },
    )


async def _start_poller(base: str, admin: str) -> tuple[Any, Any, Connection]:
    """The API poller process, warm and polling; (process, stop event, its pipe)."""
    context = multiprocessing.get_context("spawn")
    go, stop = context.Event(), context.Event()
    inbox, outbox = context.Pipe(duplex=False)
    poller = context.Process(target=poll_api, args=(base, admin, go, stop, outbox))
    poller.start()
    assert await asyncio.to_thread(inbox.recv) == "ready"
    go.set()
    return poller, stop, inbox


async def _change_phase(
    api: httpx.AsyncClient, fleet: Fleet, port: int, pid: int, poller: tuple[Any, Any, Connection] | None
) -> dict[str, Any]:
    """Edit the rule every document holds and provision; until every agent has its new hash.
    With `poller` running, its API latencies are collected when the last agent has it."""
    phase = f"change-{port}"
    answer = await api.put(f"/api/v1/rules/application/{EVERY_RULE}", json=every_rule(port))
    assert answer.status_code in (200, 201), answer.text  # the draft edit is not timed

    async def provision() -> None:
        answer = await api.post("/api/v1/versions", json={"note": f"fleet: port {port} in every document"})
        assert answer.status_code == 201, answer.text

    gc_before = await _gc_pauses(api)
    cpu, own, started = cpu_s(pid), _own_cpu_s(), time.perf_counter()
    fan_out, provision_took = await _phase(fleet, phase, fleet.count, provision, 300)
    gc_after = await _gc_pauses(api)
    arrivals = sorted(fleet.arrivals[phase].values())
    figures = {
        "seconds_to_last_agent": round(fan_out, 3),
        "seconds_to_first_agent": round(arrivals[0] - started, 3),
        "seconds_to_median_agent": round(arrivals[len(arrivals) // 2] - started, 3),
        "provision_request_s": round(provision_took, 3),
        "fan_out_server_cpu_s": round(cpu_s(pid) - cpu, 2),
        "fan_out_bench_cpu_s": round(_own_cpu_s() - own, 2),
        "bytes_sent_mb": round(fleet.bytes[phase] / 1e6, 3),
        "body_bytes_mb": round(fleet.body_bytes[phase] / 1e6, 3),
        "change_deltas": fleet.deltas.get(phase, 0),
        # the server's full garbage collections from the provision to the last agent (each stops
        # every request): their number and seconds, from /metrics
        "fan_out_gc_full_collections": gc_after[0] - gc_before[0],
        "fan_out_gc_full_collection_s": round(gc_after[1] - gc_before[1], 3),
    }
    if poller is not None:
        process, stop, inbox = poller
        stop.set()
        polled = await asyncio.to_thread(inbox.recv)
        process.join(30)
        figures.update(_api_figures(polled))
    print(f"fleet: provision -> last of {fleet.count} in {fan_out:.2f} s, {figures['bytes_sent_mb']} MB; "
          f"API p50/p99 {figures.get('api_p50_ms')}/{figures.get('api_p99_ms')} ms", flush=True)  # fmt: skip
    return figures


async def _gc_pauses(api: httpx.AsyncClient) -> tuple[int, float]:
    """The server's full garbage collections so far and their seconds (its /metrics)."""
    answer = await api.get("/metrics")
    assert answer.status_code == 200, answer.text
    samples = dict(line.rsplit(" ", 1) for line in answer.text.splitlines() if line and line[0] != "#")
    return int(float(samples["microseg_gc_full_collection_seconds_count"])), float(
        samples["microseg_gc_full_collection_seconds_sum"]
    )


def _api_figures(polled: dict[str, Any]) -> dict[str, Any]:
    latencies = polled["latencies"]
    together = [x for v in latencies.values() for x in v]
    return {
        "api_p50_ms": percentile(together, 0.5),
        "api_p99_ms": percentile(together, 0.99),
        "api_samples": len(together),
        "api_errors": len(polled["errors"]),
        "api_metrics_p50_ms": percentile(latencies["/metrics"], 0.5),
        "api_metrics_p99_ms": percentile(latencies["/metrics"], 0.99),
        "api_workloads_p50_ms": percentile(latencies["/api/v1/workloads?limit=100"], 0.5),
        "api_workloads_p99_ms": percentile(latencies["/api/v1/workloads?limit=100"], 0.99),
    }


async def _relabel_phase(api: httpx.AsyncClient, fleet: Fleet) -> dict[str, Any]:
    """A db of (app0, prod) becomes a cache: the api workloads of that scope hold both sets."""
    moved = next(i for i in range(fleet.count) if group(i) == ("app0", "db", "prod"))

    async def relabel() -> None:
        body = {"workloads": [hostname(moved)], "add": {"role": "cache"}}
        answer = await api.post("/api/v1/labels/bulk", json=body)
        assert answer.status_code == 200 and answer.json()["changed"], answer.text

    print(f"fleet: relabel {hostname(moved)}", flush=True)
    relabel_s, took, reached = await _quiet_phase(fleet, "relabel", relabel, QUIET_S)
    print(f"fleet: relabel -> last of {reached} agents in {relabel_s:.3f} s", flush=True)
    return {
        "relabel_s": round(relabel_s, 3),
        "relabel_request_s": round(took, 3),
        "relabel_agents": reached,
        "relabel_mb": round(fleet.bytes["relabel"] / 1e6, 3),
    }


async def _fleet(base: str, port: int, admin: str, count: int, pid: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"agents": count}
    auth = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=300) as api:
        credentials, enrolled = await _enroll_phase(api, port, count, pid)
        figures.update(enrolled)
        if enrolled["enroll_errors"]:
            return figures  # the rest needs every agent
        fleet, tasks, connected = await _connect_phase(api, port, credentials, pid)
        figures.update(connected)
        try:
            # the target's run: the fan-out while the API is polled
            figures.update(await _change_phase(api, fleet, 12346, pid, await _start_poller(base, admin)))
            # the same change again without the poller: what the polling itself costs the fan-out
            await _until_parked(api, count, fleet)  # each change starts from the steady state
            alone = await _change_phase(api, fleet, 12347, pid, None)
            figures.update({f"unpolled_{k}": alone[k] for k in UNPOLLED})
            await _until_parked(api, count, fleet)
            figures.update(await _relabel_phase(api, fleet))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        figures.update(verified=fleet.verified, agent_errors=len(fleet.errors))
        if fleet.errors:
            raise RuntimeError(f"{len(fleet.errors)} agents failed: {fleet.errors[:5]}")
    return figures


def run(url: str, workdir: Path, agents: int) -> dict[str, Any]:
    """The fleet bench on a fresh database `url` with `agents` agents; its figures."""
    raise_nofile()
    db = database.Database(url)
    migrate.upgrade(db)
    with db.write() as conn:
        admin = tokens.create_api(conn, "bench", "admin", "bench")[1]
    db.dispose()
    port = processes.free_port()
    with processes.server(url, workdir / "fleet.log", port) as base:
        pid = server_pid(port)
        figures = asyncio.run(_fleet(base, port, admin, agents, pid))
        figures["server_cpu_s_total"] = round(cpu_s(pid), 2)
    return figures


def main() -> None:
    from bench_server import backend  # here: bench_server imports this module

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--output", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    workdir = Path("/tmp") / f"microseg-fleet-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    results = {}
    for name in args.backends.split(","):
        with backend(name, workdir) as url:
            results[name] = run(url, workdir, args.agents)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    for name, f in results.items():
        print(f"{name}: " + ", ".join(f"{k}={f.get(k)}" for k in (
            "agents", "enroll_per_s", "enroll_errors", "seconds_to_last_agent", "bytes_sent_mb", "relabel_s",
            "api_p99_ms", "rss_mb")))  # fmt: skip


if __name__ == "__main__":
    main()
