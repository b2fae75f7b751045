"""Control-plane benchmarks against a real `microseg server` process; run by `bench/run`, judged by
bench/report.py.

Targets (issue #4, #17; defined in bench/targets.py): flow ingestion in batches of 1,000, on SQLite
and on PostgreSQL; one provision reaching 1,000 long-polling agents (simulated clients); and issue
#17's fleet of 10,000 agents through the public API only (bench/bench_fleet.py, `--fleet N`,
stored under `runs.<backend>.fleet`).

Run: .venv/bin/python bench/bench_server.py [--quick] [--backends sqlite,postgres] [--agents N]
[--batches N] [--fleet N] [--output FILE]
It starts the server on 127.0.0.1 (a free port), prints a Markdown table and writes the raw figures
(default bench/results/adhoc/server.json); `bench/run` is what writes bench/results/ and
BENCHMARKS.md. PostgreSQL is the test database (127.0.0.1:5432, `test`), in a schema of its own
that is dropped afterwards. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import processes

import bench_fleet
from microseg.cli import loading
from microseg.policyfile import dumper, synthetic
from microseg.store import agents, database, migrate, objects, tokens

RESULTS = Path(__file__).parent / "results" / "adhoc" / "server.json"
"""Where a run of this script alone writes; `bench/run` gives --output (see bench/runner.py)."""
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL of the backend (a PostgreSQL schema is dropped at the end)."""
    if name == "sqlite":
        yield database.sqlite_url(workdir / f"sqlite-{uuid.uuid4().hex[:6]}")
        return
    schema = f"ms_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Variables set for the server processes started inside the block."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare(url: str) -> database.Database:
    """Migrate and return a handle (the bench creates tokens and agents directly in the store)."""
    db = database.Database(url)
    migrate.upgrade(db)
    return db


def sender_address(index: int) -> str:
    """The address of sender `index`'s workload (ingest keeps only records about it)."""
    return f"10.76.{index // 250}.{index % 250 + 1}"


def flow_record(rng: random.Random, own: str) -> dict[str, Any]:
    """A plausible flow summary, reported by the workload at `own` (on its side of the record)."""
    now = time.time()
    direction = rng.choice(["in", "out"])
    peer = f"10.77.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return {
        "direction": direction,
        "src": own if direction == "out" else peer,
        "dst": peer if direction == "out" else own,
        "dport": rng.choice([443, 80, 3306, 5432, 22]),
        "proto": "tcp",
        "process": rng.choice(["nginx", "java", "postgres", None]),
        "bytes": rng.randrange(10**6),
        "packets": rng.randrange(1000),
        "first_seen": now - 60,
        "last_seen": now,
        "verdict": rng.choice(["allowed"] * 18 + ["blocked", "would-block"]),
        "rule": None,
    }


def bench_ingest(
    url: str, workdir: Path, batches: int, senders: int, invariants: bool = False
) -> dict[str, Any]:
    """`batches` batches of 1,000 records from `senders` agents in parallel, over HTTP; with
    `invariants`, the example estate (two invariants) provisioned first, so that every batch is
    judged against them as well."""
    db = prepare(url)
    creds = []
    with db.write() as conn:
        admin = tokens.create_api(conn, "bench", "admin", "bench")[1]
        for i in range(senders):
            name = f"sender-{i}"
            spec = {"kind": "vm", "addresses": [sender_address(i)]}
            doc = {"apiVersion": "microseg.io/v1", "kind": "Workload", "metadata": {"name": name},
                   "spec": spec}  # fmt: skip
            objects.put(conn, "Workload", name, doc, "bench")
            creds.append(agents.create(conn, name, {})[1])
    db.dispose()
    rng = random.Random(0)
    records = [[flow_record(rng, sender_address(i % senders)) for _ in range(1000)] for i in range(batches)]
    bodies = [json.dumps({"batch_id": f"b-{i}", "records": r}).encode() for i, r in enumerate(records)]
    # the bench measures ingest, not the per-agent upload limit (its senders upload back to back)
    with _environment(MICROSEG_FLOW_UPLOADS_PER_MINUTE=str(batches)), \
            processes.server(url, workdir / "ingest.log") as base:  # fmt: skip
        if invariants:
            _provision_example(base, admin)

        def send(index: int, latencies: list[float]) -> None:
            with httpx.Client(
                base_url=base,
                timeout=60,
                headers={"Authorization": f"Bearer {creds[index]}", "Content-Type": "application/json"},
            ) as http:
                for body in bodies[index::senders]:
                    start = time.perf_counter()
                    answer = http.post("/api/v1/agent/flows", content=body)
                    latencies.append(time.perf_counter() - start)
                    assert answer.status_code == 200 and answer.json()["stored"], answer.text

        latencies: list[float] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=(i, latencies)) for i in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - started
    return {
        "records": batches * 1000,
        "seconds": round(took, 3),
        "records_per_second": round(batches * 1000 / took),
        "batch_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "batch_p99_ms": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "senders": senders,
        "invariants": 2 if invariants else 0,
    }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0
    )
    return status, await reader.readexactly(length) if length else b""


async def _agent(
    port: int, credential: str, ready: asyncio.Event, got: list[float], seen: asyncio.Queue[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {credential}\r\nHost: bench\r\n"
    writer.write(f"GET /api/v1/agent/ruleset HTTP/1.1\r\n{auth}\r\n".encode())
    status, body = await _read_response(reader)
    assert status == 200, body[:300]
    known = json.loads(body)["hash"]
    writer.write(f"GET /api/v1/agent/ruleset?known={known}&wait=60 HTTP/1.1\r\n{auth}\r\n".encode())
    await writer.drain()
    await seen.put(known)
    status, body = await _read_response(reader)
    got.append(time.perf_counter())
    assert status == 200 and json.loads(body)["hash"] != known, (status, body[:200])
    writer.close()


async def _fan_out(port: int, creds: list[str], provision: Any, parked: Any) -> tuple[float, int]:
    got: list[float] = []
    seen: asyncio.Queue[str] = asyncio.Queue()
    ready = asyncio.Event()
    tasks = [asyncio.create_task(_agent(port, c, ready, got, seen)) for c in creds]
    for _ in creds:
        await seen.get()
    while await asyncio.to_thread(parked) < len(creds):  # until every long-poll waits on the server
        await asyncio.sleep(0.2)
    started = time.perf_counter()
    await asyncio.to_thread(provision)
    await asyncio.gather(*tasks)
    return max(got) - started, len(got)


def bench_fan_out(url: str, workdir: Path, count: int) -> dict[str, Any]:
    """`count` agents long-polling; one provision; time until the last has its new document."""
    size = count
    while (
        sum(w.managed for w in synthetic.generate(size, max(1, count // 10), count // 5, seed=0).workloads)
        < count
    ):
        size += 1  # the generator makes a few unmanaged devices; every agent needs a managed workload
    est = synthetic.generate(size, max(1, count // 10), count // 5, seed=0)
    db = prepare(url)
    with db.write() as conn:
        admin = tokens.create_api(conn, "bench", "admin", "bench")[1]
    port = processes.free_port()
    with (
        processes.server(url, workdir / "fanout.log", port) as base,
        httpx.Client(
            base_url=base + "/api/v1", headers={"Authorization": f"Bearer {admin}"}, timeout=300
        ) as api,
    ):
        started = time.perf_counter()
        assert api.post("/apply", json={"documents": dumper.documents(est)}).status_code == 200
        applied = time.perf_counter() - started
        assert api.post("/versions", json={"note": "v1"}).status_code == 201
        with db.write() as conn:
            creds = [agents.create(conn, w.name, {})[1] for w in est.workloads if w.managed]
        opening = {
            "apiVersion": "microseg.io/v1",
            "kind": "Rule",
            "metadata": {"name": "bench-open"},
            "spec": {
                "tier": "application",
                "priority": 999_999,
                "action": "allow",
                "from": "any",
                "to": "any",
                "services": [{"port": 12345}],
            },
        }

        assert api.post("/rules", json=opening).status_code == 201  # the draft edit is not timed

        def provision() -> None:
            assert api.post("/versions", json={"note": "v2"}).status_code == 201

        def parked() -> int:
            text = httpx.get(base + "/metrics", headers=api.headers).text
            return int(
                float(next(x for x in text.splitlines() if x.startswith("microseg_feed_waiting ")).split()[1])
            )

        took, reached = asyncio.run(_fan_out(port, creds, provision, parked))
    db.dispose()
    return {
        "agents": reached,
        "seconds_to_last_agent": round(took, 3),
        "apply_seconds": round(applied, 2),
        "workloads": len(est.workloads),
        "rules": len(est.rules),
    }


QUICK = {"agents": 200, "batches": 20, "fleet": 300}
"""Sizes of `--quick` (a smoke run: its figures are never judged against the targets)."""


def _provision_example(base: str, admin: str) -> None:
    """Apply and provision the example estate (its invariants.yaml declares two invariants)."""
    docs = dumper.documents(loading.load(None, example=True))
    auth = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=base + "/api/v1", headers=auth, timeout=300) as api:
        assert api.post("/apply", json={"documents": docs}).status_code == 200
        assert api.post("/versions", json={"note": "bench"}).status_code == 201


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--senders", type=int, default=4)
    told = "agents of the fleet bench (bench_fleet.py: enrollment, deltas, relabel, API p99, RSS); 0: none"
    parser.add_argument("--fleet", type=int, default=10_000, help=told)
    told = "ingest with the example estate provisioned: its two invariants judged for every batch"
    parser.add_argument("--invariants", action="store_true", help=told)
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the raw figures go (JSON)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    workdir = Path("/tmp") / f"microseg-bench-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    results: dict[str, Any] = {
        "agents": args.agents, "batches": args.batches, "batch_records": 1000, "senders": args.senders,
        "fleet_agents": args.fleet, "fleet_rules": len(bench_fleet.policy()), "runs": {},
    }  # fmt: skip
    for name in args.backends.split(","):
        with backend(name, workdir) as url:
            ingest = bench_ingest(url, workdir, args.batches, args.senders, args.invariants)
        with backend(name, workdir) as url:
            fan_out = bench_fan_out(url, workdir, args.agents)
        results["runs"][name] = {"ingest": ingest, "fan_out": fan_out}
        print(f"{name}: ingest {ingest}\n{name}: fan-out {fan_out}", flush=True)
        if args.fleet > 0:
            with backend(name, workdir) as url:
                results["runs"][name]["fleet"] = bench_fleet.run(url, workdir, args.fleet)
            print(f"{name}: fleet {results['runs'][name]['fleet']}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| backend | flow ingest (records/s, batches of 1,000) | batch p50 / p99 | provision -> last |")
    print("|---|---:|---:|---:|")
    for name, run in results["runs"].items():
        i, f = run["ingest"], run["fan_out"]
        print(
            f"| {name} | {i['records_per_second']:,} | {i['batch_p50_ms']} / {i['batch_p99_ms']} ms | "
            f"{f['seconds_to_last_agent']} s ({f['agents']} agents) |"
        )
    _print_fleet(results)


def _print_fleet(results: dict[str, Any]) -> None:
    """The fleet figures as a second Markdown table (when the fleet bench ran)."""
    fleets = {name: run["fleet"] for name, run in results["runs"].items() if "fleet" in run}
    if not fleets:
        return
    print("\n| backend | agents | enroll/s (slowest tenth) | errors | provision -> last | MB sent | "
          "relabel -> last | API p99 | RSS |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in fleets.items():
        print(
            f"| {name} | {f['agents']:,} | {f.get('enroll_per_s')} | {f.get('enroll_errors')} | "
            f"{f.get('seconds_to_last_agent')} s | {f.get('bytes_sent_mb')} | {f.get('relabel_s')} s | "
            f"{f.get('api_p99_ms')} ms | {f.get('rss_mb')} MB |"
        )


if __name__ == "__main__":
    main()
