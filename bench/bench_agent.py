"""Agent data-plane benchmarks (issue 5 §8, #17) in an ms- network-namespace lab; run by `bench/run`,
judged by bench/report.py against bench/targets.py.

What is measured, the ratios in the same run:

- new TCP connections/s through the agent's enforced ruleset (5,000 peer addresses) against a
  conntrack-only ruleset, against the same policy written as linear iptables rules, and against no
  firewall (the ceiling of the iptables ratio);
- the agent observing (conntrack events + attribution + flow table) at full load against the same
  rules with nothing observing;
- the agent's CPU and RSS at a paced 500 new connections/s;
- provision -> rules enforced on a host, p50 and p99.

Lab: one client namespace `ms-bn-<tag>c` and one server namespace per mechanism (`ms-bn-<tag><i>`,
server 10.77.<240+i>.1, client 10.77.<240+i>.2 and .3, the second address allowed by no rule), each
joined to the client by its own veth pair; the real agent's namespace also has a veth to a control
plane namespace `ms-bn-<tag>p` (10.77.239.1) where `microseg server` runs. Nothing is created in the
root namespace; traffic flows only between those addresses. The namespaces live for the whole run,
so rounds alternate quickly between mechanisms (the bench's conntrack entries are deleted before each
storm): ratios are taken between storms seconds apart, which this noisy shared VM needs; a second
no-firewall namespace (`none-aa`) shows how far two identical set-ups differ. cps client and server are
pinned to one CPU (`--cpu`), so every rate is "what one core can do"; `cps.c` (compiled with gcc
into a temporary directory) connects and resets in a loop and reports the rate and connect() p50/p99.

Mechanisms (the server namespace's hooks):
  none, none-aa        no firewall: the limit of the lab (twice: an A/A control)
  conntrack-only       nft `ct state established,related accept`, policy accept
  agent                what microseg enforces: an estate (the server in enforce mode, an IP list of
                       5,000 addresses including the client's, allow tcp/8080 from it) compiled by the
                       engine, rendered by `microseg.render.nftables`, loaded with `nft -f -`
  iptables-linear      the same policy as iptables-legacy rules: ESTABLISHED,RELATED accept, 5,000
                       `-s IP -p tcp --dport 8080 -j ACCEPT` in address order (the client's address
                       sorts last: every new connection walks all of them, the worst case), policy DROP
  iptables-nft-linear  the same rules through iptables-nft (Debian's default `iptables`), for reference
Phase 2, in one more namespace, where the real agent (`microseg agent`, enrolled with a real
`microseg server` that provisioned the same policy) applied the rules:
  observer-off         the agent stopped: its rules stay in force (fail-static), nothing observes
  agent+observe        the agent running, pinned to the same CPU as client and server
  agent+observe@cpuN   the agent running on the other CPU (`--other-cpu`): the in-kernel share alone
Without a usable agent daemon (`--observer pieces`, or auto when `microseg agent` cannot start) the
same three run with the observation pieces (conntrack listener, /proc attribution, flow table) in a
child process over the `agent` ruleset; that child also counts the events it received.
Then: the agent's CPU (utime+stime from /proc) and RSS idle and at a paced 500 connections/s, and
provision -> enforced latency (the clock runs from `POST /versions` until the new rule's port shows in
the agent's nft chain, watched through the nf_tables generation id).

Each round visits every mechanism (rotated order); figures are medians over rounds, ratios both as
ratio of medians and as the median of the per-round ratios ("paired", the one judged).

Run as root: .venv/bin/python bench/bench_agent.py            (~6 minutes; --help for options)
             .venv/bin/python bench/bench_agent.py --quick    (smoke run, under a minute)
It prints Markdown and writes the raw figures (default bench/results/adhoc/agent.json; `bench/run`
writes bench/results/ and BENCHMARKS.md). Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from microseg.agent import netns
from microseg.agent import nft as nftlib
from microseg.engine import engine
from microseg.model import addresses, ruleset, services
from microseg.policyfile import loader
from microseg.render import nftables, semantics

RESULTS = Path(__file__).parent / "results" / "adhoc" / "agent.json"
"""Where a run of this script alone writes; `bench/run` gives --out (see bench/runner.py)."""
CPS_SOURCE = Path(__file__).parent / "cps.c"
PORT, CLOSED_PORT, API_PORT, MARKER_PORT = 8080, 9, 8440, 20000
CP_IP, CP_HOST_IP = "10.77.239.1", "10.77.239.2"
FIRST_PEER = "10.77.16.1"
"""Other peers are every second address from here (no two adjacent: nothing collapses into a CIDR)."""
API = "microseg.io/v1"
WORKLOAD = "bench-srv"
TABLE_CHAIN = "inet microseg in_application"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- processes


def in_ns(ns: str | None, argv: Sequence[str], cpu: int | None = None) -> list[str]:
    """`argv` inside network namespace `ns` (setns through nsenter), pinned to `cpu` if given."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    enter = ["nsenter", f"--net=/run/netns/{ns}", "--"] if ns else []
    return [*enter, *pin, *argv]


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
    """Run a command; its stdout. A failure raises with the command's stderr."""
    done = subprocess.run(
        list(argv), check=False, input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... rc={done.returncode}: {done.stderr.strip()[-600:]}")
    return done.stdout


def timed_run(argv: Sequence[str], stdin: str | None = None) -> float:
    """Wall seconds of one command, its process start included."""
    start = time.perf_counter()
    run(argv, stdin=stdin)
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def pin_all_threads(pid: int, cpu: int) -> None:
    """Move every thread of a running process to `cpu`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; a process only by its own handle."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class Host:
    """One server namespace with its link to the client."""

    key: str
    ns: str
    index: int

    @property
    def server_ip(self) -> str:
        return f"10.77.{240 + self.index}.1"

    @property
    def client_ip(self) -> str:
        """The client's address towards this host: a peer the policy allows."""
        return f"10.77.{240 + self.index}.2"

    @property
    def stranger_ip(self) -> str:
        """A second client address that no rule allows."""
        return f"10.77.{240 + self.index}.3"


class Lab:
    """The client namespace, one namespace per host, and the control plane namespace.

    It owns exactly the namespaces and processes it made; leaving the context (also on an error)
    stops the processes by their handles and deletes the namespaces, with what is inside them."""

    def __init__(self, cps: str, cpu: int) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.client = f"ms-bn-{self.tag}c"
        self.cps, self.cpu = cps, cpu
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Lab:
        self._namespace(self.client)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)

    def _namespace(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")

    @staticmethod
    def _link(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
        """A veth pair between two namespaces: each end as (namespace, device, address/prefix)."""
        run(["ip", "-n", a[0], "link", "add", a[1], "type", "veth", "peer", "name", b[1], "netns", b[0]])
        for ns, dev, ip in (a, b):
            run(["ip", "-n", ns, "addr", "add", ip, "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])

    def add_host(self, key: str) -> Host:
        """A fresh server namespace, linked to the client, serving cps on PORT."""
        # numbered by hosts ever added, not by those still listed: a dropped host keeps its namespace
        index = len(self.namespaces) - 1  # the client's namespace is the first
        host = Host(key, f"ms-bn-{self.tag}{index}", index)
        self._namespace(host.ns)
        sysctl(host.ns, "net.core.somaxconn=4096", "net.ipv4.tcp_max_syn_backlog=8192")
        veth = f"ms-{self.tag}{host.index}"
        self._link(
            (self.client, veth + "c", f"{host.client_ip}/24"), (host.ns, veth + "s", f"{host.server_ip}/24")
        )
        run(["ip", "-n", self.client, "addr", "add", f"{host.stranger_ip}/24", "dev", veth + "c"])
        self.start(in_ns(host.ns, [self.cps, "serve", host.server_ip, str(PORT)], self.cpu))
        self.hosts[key] = host
        for _ in range(50):
            if self.probe(host, CLOSED_PORT) == "refused":
                return host
            time.sleep(0.1)
        raise RuntimeError(f"lab: no connectivity from the client to {host.ns}")

    def add_control_plane(self, host: Host) -> str:
        """The control plane namespace, linked to `host`; its name."""
        ns = f"ms-bn-{self.tag}p"
        self._namespace(ns)
        self._link((ns, f"ms-{self.tag}p", f"{CP_IP}/24"), (host.ns, f"ms-{self.tag}a", f"{CP_HOST_IP}/24"))
        return ns

    def start(self, argv: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        """A process stopped when the lab closes (stdout and stderr to `log`)."""
        out = log.open("ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at once (rc={proc.returncode})")
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a process started by `start` now."""
        stop_process(proc)
        self.procs.remove(proc)

    def probe(self, host: Host, port: int, source: str | None = None, timeout_ms: int = 300) -> str:
        """One connection attempt from the client: connected, refused or timeout."""
        argv = [self.cps, "probe", host.server_ip, str(port), str(timeout_ms), source or host.client_ip]
        return run(in_ns(self.client, argv)).strip()

    def storm(self, host: Host, secs: float, rate: float = 0) -> dict[str, Any]:
        """Connections from the client for `secs` (rate 0: as fast as one core allows)."""
        argv = [self.cps, "storm", host.server_ip, str(PORT), str(secs), "2000000", str(rate), host.client_ip]
        result: dict[str, Any] = json.loads(run(in_ns(self.client, argv, self.cpu), timeout=secs + 60))
        return result

    def checks(self, host: Host) -> dict[str, str]:
        """The allowed flow, a closed port, and the allowed port from a source no rule allows."""
        return {
            "allowed": self.probe(host, PORT),
            "closed_port": self.probe(host, CLOSED_PORT),
            "stranger": self.probe(host, PORT, source=host.stranger_ip),
        }


def sysctl(ns: str, *settings: str) -> None:
    """Per-namespace sysctls (inside `ns` only)."""
    run(in_ns(ns, ["sysctl", "-qw", *settings]))


def flush_conntrack(ns: str) -> None:
    """Forget the bench's connections in `ns` (conntrack -D there, nowhere else), leaving others alone.

    Not `conntrack -F`: the agent's long-poll to the control plane must keep its state, because its
    ruleset lets packets *from* the control plane in only as part of a tracked connection (a
    flushed entry is picked up again as new, from the server's side, and dropped)."""
    run(in_ns(ns, ["conntrack", "-D", "-p", "tcp", "--orig-port-dst", str(PORT)]), check=False)


def expected_checks(enforcing: bool) -> dict[str, str]:
    """What `Lab.checks` must answer with and without a default deny."""
    return {
        "allowed": "connected",
        "closed_port": "timeout" if enforcing else "refused",
        "stranger": "timeout" if enforcing else "connected",
    }


def build_cps(workdir: str) -> str:
    """Compile cps.c into `workdir`; the binary's path."""
    binary = os.path.join(workdir, "cps")
    run(["gcc", "-O2", "-Wall", "-o", binary, str(CPS_SOURCE)])
    return binary


# --------------------------------------------------------------------------- the policy


def peer_addresses(count: int, client_ip: str) -> list[str]:
    """`count` peer addresses, `client_ip` among them (it sorts last)."""
    first = int(ipaddress.ip_address(FIRST_PEER))
    return [str(ipaddress.ip_address(first + 2 * i)) for i in range(count - 1)] + [client_ip]


def policy_objects(peers: Sequence[str], marker_port: int = MARKER_PORT) -> list[dict[str, Any]]:
    """The policy in policy-file form: allow tcp/PORT from an IP list of `peers` to the server; and a
    `marker` rule on `marker_port` that phase 2 changes to see each provision arrive."""

    def rule(name: str, priority: int, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "priority": priority,
            "action": "allow",
            "from": [{"ipList": "bench-peers"}],
            "to": [{"selector": f"app={WORKLOAD}"}],
            "services": [{"port": port}],
        }

    return [
        {
            "apiVersion": API,
            "kind": "IPList",
            "metadata": {"name": "bench-peers"},
            "spec": {"cidrs": list(peers)},
        },
        {
            "apiVersion": API,
            "kind": "Policy",
            "metadata": {"name": "bench"},
            "spec": {
                "tier": "application",
                "rules": [rule("peers-to-srv", 100, PORT), rule("marker", 110, marker_port)],
            },
        },
    ]


def agent_document(peers: Sequence[str], server_ip: str) -> ruleset.RulesetDocument:
    """The server's ruleset document, compiled by the engine from the bench estate."""
    server = {
        "apiVersion": API,
        "kind": "Workload",
        "metadata": {"name": WORKLOAD, "labels": {"app": WORKLOAD}},
        "spec": {"kind": "host", "addresses": [server_ip], "mode": "enforce"},
    }
    text = json.dumps({"apiVersion": API, "kind": "List", "items": [server, *policy_objects(peers)]})
    return engine.PolicyEngine(loader.load_text(text, "<bench>")).document(WORKLOAD)


def agent_script(peers: Sequence[str], server_ip: str) -> str:
    """What microseg's agent loads for that document: `microseg.render.nftables` output."""
    script = nftables.render(agent_document(peers, server_ip)).text
    if f"tcp dport {PORT}" not in script:
        raise RuntimeError("the rendered ruleset does not allow the bench port")
    return script


def iptables_script(peers: Sequence[str]) -> str:
    """The same policy as one linear iptables rule per peer, in address order."""
    ordered = sorted(peers, key=ipaddress.ip_address)
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    lines += [f"-A INPUT -s {ip}/32 -p tcp -m tcp --dport {PORT} -j ACCEPT" for ip in ordered]
    return "\n".join([*lines, "COMMIT", ""])


CONNTRACK_ONLY = """table inet ms_bench
delete table inet ms_bench
table inet ms_bench {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related accept
\t}
}
"""


# --------------------------------------------------------------------------- observers (phase 2)


class Observer:
    """One observing process for a host namespace; subclasses say how it starts and when it is ready.

    Started and stopped between storms; `use_cpu` moves its threads."""

    name = "?"

    def __init__(self, lab: Lab, host: Host, workdir: Path, cpu: int) -> None:
        self.lab, self.host, self.workdir, self.cpu = lab, host, workdir, cpu
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the process observes (and enforces, for the agent)."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        """Start it (pinned to `cpu`) and wait until it is ready and its start-up work is over."""
        if self.proc is not None:
            return
        self.proc = self.lab.start(
            ["taskset", "-c", str(self.cpu), *self.argv()], self.workdir / f"{self.name}.log"
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")
            time.sleep(0.1)
        settle(self.pid, deadline)

    def stop(self) -> None:
        """Stop it; conntrack accounting (which it switched on) goes off again in the namespace."""
        if self.proc is not None:
            self.lab.forget(self.proc)
            self.proc = None
        sysctl(self.host.ns, "net.netfilter.nf_conntrack_acct=0")

    def use_cpu(self, cpu: int) -> None:
        """Start if needed, then run on `cpu`."""
        self.start()
        pin_all_threads(self.pid, cpu)

    def snapshot(self) -> dict[str, Any] | None:
        """Counters of what it observed so far, where it can tell (None otherwise)."""
        return None

    def log_tail(self) -> str:
        """The end of its log."""
        log = self.workdir / f"{self.name}.log"
        return log.read_text(errors="replace")[-1500:] if log.exists() else ""


def settle(pid: int, deadline: float, window: float = 0.5) -> None:
    """Wait until a process uses under ~2 % of a core over `window` (its start-up work is done)."""
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before <= 0.02 * window + 1 / CLK_TCK:
            return
        before = now


class AgentDaemon(Observer):
    """The real agent: `microseg agent`, enrolled with the lab's control plane, in the host namespace."""

    name = "agent"

    def __init__(self, lab: Lab, host: Host, workdir: Path, cpu: int, *, server: str, token: str) -> None:
        super().__init__(lab, host, workdir, cpu)
        self.server, self.token = server, token
        self.state = workdir / "agent-state"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "microseg", "agent", "--server", self.server, "--enroll-token", self.token,
            "--netns", self.host.ns, "--state-dir", str(self.state), "--hostname", WORKLOAD, "--kind", "host",
            "--log-level", "info",
        ]  # fmt: skip

    def ready(self) -> bool:
        return f"dport {PORT}" in (list_chain(self.host.ns) or "")


class ObservationPieces(Observer):
    """The agent's observation pieces in a child process (this script, `--observer-child`), over the
    ruleset the bench loaded: conntrack listener, /proc owner lookup, flow table when it exists."""

    name = "pieces"

    def __init__(self, lab: Lab, host: Host, workdir: Path, cpu: int, peers: int) -> None:
        super().__init__(lab, host, workdir, cpu)
        self.peers = peers
        self.stats = workdir / "pieces.json"

    def argv(self) -> list[str]:
        child = [sys.executable, str(Path(__file__).resolve()), "--observer-child", self.host.ns]
        child += ["--peers", str(self.peers), "--observer-index", str(self.host.index)]
        return [*child, "--out", str(self.stats)]

    def ready(self) -> bool:
        return self.stats.with_suffix(".ready").exists()

    def stop(self) -> None:
        super().stop()
        self.stats.with_suffix(".ready").unlink(missing_ok=True)

    def counted(self) -> dict[str, Any]:
        """What the child counted by its last snapshot (or exit)."""
        return json.loads(self.stats.read_text()) if self.stats.exists() else {}

    def snapshot(self) -> dict[str, Any] | None:
        """The child's counts now (it writes them on SIGUSR1)."""
        seen = self.counted().get("snapshots", -1)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with contextlib.suppress(ValueError):
                now = self.counted()
                if now.get("snapshots", -1) > seen:
                    return now
            time.sleep(0.02)
        return None


def observer_child(ns: str, peers: int, index: int, out: Path) -> None:
    """Body of `--observer-child`: what the daemon's observe thread does, until SIGTERM."""
    from microseg.agent import conntrack, procfs

    host = Host("observed", ns, index)
    doc = agent_document(peer_addresses(peers, host.client_ip), host.server_ip)
    table = _flow_table(doc, host.server_ip)
    netns.enter(ns)
    stopping, asked = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGUSR1, lambda *_: asked.set())
    conntrack.enable_accounting()
    listener, owners = conntrack.ConntrackListener(), procfs.OwnerIndex()
    counts = {"new": 0, "destroy": 0, "lost_reads": 0, "attributed": 0, "flow_records": 0, "snapshots": 0}
    counts["flow_table"] = table is not None
    out.with_suffix(".ready").write_text("1")
    drained = time.monotonic()
    while not stopping.is_set():
        ready, _, _ = select.select([listener.fileno()], [], [], 0.2)
        if ready:
            events, lost = listener.read()
            counts["lost_reads"] += lost
            for ev in events:
                owner = None
                if ev.kind == "new":
                    owner = owners.lookup(ev.proto, ev.dst, ev.dport or 0, ev.src, ev.sport or 0)
                    counts["attributed"] += owner is not None
                counts[ev.kind] = counts.get(ev.kind, 0) + 1
                if table is not None:
                    table.on_conntrack(ev, owner)
        if table is not None and time.monotonic() - drained >= 2.0:
            counts["flow_records"] += len(table.drain())
            drained = time.monotonic()
        if asked.is_set():
            asked.clear()
            counts["snapshots"] += 1
            _write_atomic(out, json.dumps(counts))
    _write_atomic(out, json.dumps(counts))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _flow_table(doc: ruleset.RulesetDocument, local: str) -> Any:
    """The agent's flow table deciding with `doc`, or None while `microseg.agent.flowtable` is missing."""
    if importlib.util.find_spec("microseg.agent.flowtable") is None:
        return None
    from microseg.agent import flowtable

    def decide(direction: str, peer: str, here: str, proto: str, port: int | None) -> tuple[str, str | None]:
        known = {p.value for p in services.Protocol}
        protocol = services.Protocol(proto) if proto in known else services.Protocol.ANY
        way: semantics.Direction = "ingress" if direction == "in" else "egress"
        action, ref = semantics.decide(
            doc, way, addresses.address(peer), addresses.address(here), protocol, port, time.time()
        )
        return action.value, ref

    return flowtable.FlowTable(lambda: [local], decide)


def list_chain(ns: str) -> str | None:
    """`nft list chain inet microseg in_application` in `ns` (None when it does not exist)."""
    done = subprocess.run(
        in_ns(ns, ["nft", "list", "chain", *TABLE_CHAIN.split()]), check=False, capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else None


# --------------------------------------------------------------------------- control plane (phase 2)


class ControlPlane:
    """A real `microseg server` (SQLite) in its own namespace, reached from this process through
    short-lived threads inside that namespace."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, cpu: int) -> None:
        self.lab, self.ns, self.workdir, self.cpu = lab, ns, workdir, cpu
        self.url = f"http://{CP_IP}:{API_PORT}"
        self.token = ""

    def start(self) -> None:
        """Database, admin token, server process; returns once /healthz answers."""
        data = self.workdir / "server-data"
        microseg = [sys.executable, "-m", "microseg"]
        # --init: a first start makes the database (token create refuses a missing one otherwise)
        made = run([*microseg, "token", "create", "--role", "admin", "--data-dir", str(data), "--init"])
        self.token = made.split()[-1]
        serve = [*microseg, "server", "--host", CP_IP, "--port", str(API_PORT), "--data-dir", str(data)]
        serve += ["--control-plane", f"{CP_IP}:{API_PORT}", "--log-level", "warning"]
        proc = self.lab.start(in_ns(self.ns, serve, self.cpu), self.workdir / "server.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if self.call("GET", "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        log = (self.workdir / "server.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"the server did not start:\n{log}")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> httpx.Response:
        """One request from inside the control plane namespace."""
        headers = {"Authorization": f"Bearer {self.token}"}

        def request() -> httpx.Response:
            with httpx.Client(base_url=self.url, timeout=timeout, headers=headers) as http:
                return http.request(method, path, json=body)

        return netns.run_in(self.ns, request)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A request that must succeed; its JSON."""
        answer = self.call(method, path, body)
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:400]}")
        return answer.json() if answer.content else {}


class MarkerWatch:
    """A thread in the agent's namespace that notes when `marker` first shows in our chain; it reads
    the nf_tables generation id every millisecond and lists the chain only when that changes."""

    def __init__(self, ns: str, marker: str) -> None:
        self.ns, self.marker = ns, marker
        self.seen: float | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _watch(self) -> None:
        netns.enter(self.ns)
        nft = nftlib.Nft()
        last = None
        self._started.set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            gen = nftlib.generation()
            if gen != last:
                last = gen
                with contextlib.suppress(nftlib.NftError):
                    if self.marker in nft.run(f"list chain {TABLE_CHAIN}"):
                        self.seen = time.perf_counter()
                        break
            time.sleep(0.001)
        nft.close()

    def wait(self) -> float | None:
        """perf_counter() when the marker was seen (None: not within 60 s)."""
        self._thread.join()
        return self.seen


def provision_latency(cp: ControlPlane, host: Host, peers: Sequence[str], count: int) -> dict[str, Any]:
    """`count` provisions, each moving the marker rule to another port: time from `POST /versions`
    until that port is in the agent's nft chain."""
    seconds, posts = [], []
    for k in range(1, count + 1):
        port = MARKER_PORT + k
        cp.ok("POST", "/api/v1/apply", {"documents": policy_objects(peers, port)[1:]})
        watch = MarkerWatch(host.ns, f"dport {port}")
        start = time.perf_counter()
        cp.ok("POST", "/api/v1/versions", {"note": f"bench marker {port}"})
        posts.append(time.perf_counter() - start)
        seen = watch.wait()
        if seen is None:
            raise RuntimeError(f"provision {k}: port {port} never reached the agent's rules")
        seconds.append(seen - start)
        time.sleep(0.2)
    rest = sorted(seconds[1:]) or sorted(seconds)
    return {
        "provisions": count,
        **percentiles(seconds),
        "first_ms": seconds[0] * 1000,
        "after_first": {k: v for k, v in percentiles(rest).items() if k != "samples_ms"},
        "post_versions_p50_ms": statistics.median(posts) * 1000,
    }


def receive_to_applied_ms(log: str, last: int) -> float | None:
    """Best effort, from the agent's log lines (timestamps in ms): the median time from a ruleset
    response (`GET .../agent/ruleset ... 200`) to the next `applied sha256:` line, over the `last`
    such pairs; None when the log does not show them."""
    gaps, got = [], None
    for line in log.splitlines():
        try:
            at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        except ValueError:
            continue
        if "/agent/ruleset" in line and " 200 " in line:
            got = at
        elif "applied sha256:" in line and got is not None:
            gaps.append((at - got) * 1000)
            got = None
    return statistics.median(gaps[-last:]) if gaps else None


def percentiles(seconds: Sequence[float]) -> dict[str, Any]:
    """p50, p99 (nearest rank) and max of durations, in ms, and the samples."""
    ordered = sorted(seconds)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
        "samples_ms": [round(s * 1000, 1) for s in seconds],
    }


def agent_footprint(lab: Lab, observer: Observer, args: argparse.Namespace) -> dict[str, Any]:
    """The observer's CPU share (utime+stime over the interval) and RSS, idle and at a paced rate.

    Idle starts once the bench's conntrack entries are gone (their expiry would be work). The paced
    window starts `paced_ramp` seconds into the storm: a reset connection's entry is destroyed 10 s
    after it closed, so only then do NEW and DESTROY events both arrive at the paced rate."""
    observer.use_cpu(observer.cpu)
    pid, host = observer.pid, observer.host
    flush_conntrack(host.ns)
    time.sleep(1)
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.idle_secs)
    idle = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
    total = args.paced_ramp + args.paced_secs
    argv = [lab.cps, "storm", host.server_ip, str(PORT), str(total), "2000000", str(args.paced_rate)]
    storm = subprocess.Popen(in_ns(lab.client, [*argv, host.client_ip], lab.cpu), stdout=subprocess.PIPE)
    try:
        time.sleep(args.paced_ramp)
        before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.paced_secs)
        busy = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
        memory = memory_kb(pid)
    finally:
        out, _ = storm.communicate(timeout=total + 60)
    paced = json.loads(out)
    return {
        "observer": observer.name,
        "idle_cpu_percent": idle * 100,
        "idle_secs": args.idle_secs,
        "paced_rate_target": args.paced_rate,
        "paced_rate": paced["cps"],
        "paced_secs": args.paced_secs,
        "paced_ramp_secs": args.paced_ramp,
        "cpu_percent": busy * 100,
        **memory,
    }


# --------------------------------------------------------------------------- mechanisms and rounds


@dataclass
class Mechanism:
    """One configuration: the host it is measured on and what must be true just before its storm."""

    name: str
    host: str
    enforcing: bool
    note: str
    prepare: Callable[[], None] = lambda: None
    """Brings the host into this mechanism's state (starts or stops an observer)."""
    observer: Observer | None = None
    """Running during the storm: its CPU time is recorded."""


@dataclass
class Sample:
    """One mechanism in one round."""

    round: int
    mechanism: str
    cps: float
    connect_p50_us: float
    connect_p99_us: float
    errors: int
    extra: dict[str, Any] = field(default_factory=dict)


def measure(lab: Lab, mech: Mechanism, rnd: int, secs: float, warmup: float) -> Sample:
    """One storm of `secs` seconds against the mechanism's host, none of the bench's earlier
    connections left in its conntrack table."""
    host = lab.hosts[mech.host]
    mech.prepare()
    lab.storm(host, warmup)  # caches and neighbour entries; not counted
    flush_conntrack(host.ns)
    observer = mech.observer
    pid = observer.pid if observer else None
    counted = observer.snapshot() if observer else None
    before = cpu_seconds(pid) if pid else 0.0
    result = lab.storm(host, secs)
    extra: dict[str, Any] = {}
    if observer and pid:
        used = cpu_seconds(pid) - before
        extra = {"observer_cpu_s": used, "observer_cpu_us_per_conn": used / max(result["conns"], 1) * 1e6}
        if counted is not None:
            time.sleep(0.3)  # the last events are read
            after = observer.snapshot() or {}
            extra["events_per_conn"] = (after.get("new", 0) - counted["new"]) / max(result["conns"], 1)
    return Sample(
        rnd,
        mech.name,
        result["cps"],
        result["connect_p50_us"],
        result["connect_p99_us"],
        result["errors"],
        extra,
    )


def rounds(
    lab: Lab, units: Sequence[Sequence[Mechanism]], count: int, secs: float, warmup: float
) -> list[Sample]:
    """`count` rounds over every unit (a group of mechanisms measured back to back), in rotated order;
    inside a unit the order flips every round."""
    samples = []
    for rnd in range(count):
        order = list(units[rnd % len(units) :]) + list(units[: rnd % len(units)])
        for unit in order:
            for mech in unit if rnd % 2 == 0 else list(reversed(unit)):
                sample = measure(lab, mech, rnd, secs, warmup)
                samples.append(sample)
                cpu = sample.extra.get("observer_cpu_us_per_conn")
                print(
                    f"round {rnd} {mech.name:20s} cps={sample.cps:9,.0f} p50={sample.connect_p50_us:6.1f}us "
                    f"p99={sample.connect_p99_us:6.1f}us" + (f" observer={cpu:.1f}us/conn" if cpu else ""),
                    flush=True,
                )
    return samples


PHASE1 = (
    ("none", False, "no firewall: the limit"),
    ("none-aa", False, "a second no-firewall namespace: A/A control for the noise"),
    ("conntrack-only", False, "`ct state established,related accept`, policy accept"),
    ("agent", True, "microseg's rendered ruleset, {peers:,} peers in an interval set"),
    ("iptables-linear", True, "iptables-legacy, {peers:,} linear rules"),
    ("iptables-nft-linear", True, "iptables-nft, {peers:,} linear rules"),
)
"""(name, enforcing, note) of the phase 1 mechanisms."""


def ruleset_for(name: str, host: Host, peers: int) -> tuple[list[str], str] | None:
    """The command and the script that program `host` for mechanism `name` (None: nothing)."""
    allowed = peer_addresses(peers, host.client_ip)
    if name == "conntrack-only":
        return ["nft", "-f", "-"], CONNTRACK_ONLY
    if name == "agent":
        return ["nft", "-f", "-"], agent_script(allowed, host.server_ip)
    if name == "iptables-linear":
        return ["iptables-legacy-restore"], iptables_script(allowed)
    if name == "iptables-nft-linear":
        return ["iptables-nft-restore"], iptables_script(allowed)
    return None


def phase1_mechanisms(lab: Lab, peers: int, loads: int) -> tuple[list[Mechanism], dict[str, Any]]:
    """Hosts for the phase 1 mechanisms, loaded (`loads` times, timed) and checked."""
    mechs, setup = [], {}
    for name, enforcing, note in PHASE1:
        host = lab.add_host(name)
        program = ruleset_for(name, host, peers)
        times = []
        if program is not None:
            times = [timed_run(in_ns(host.ns, program[0]), stdin=program[1]) * 1000 for _ in range(loads)]
        setup[name] = {"load_ms": median(times), "checks": lab.checks(host), "enforcing": enforcing}
        mechs.append(Mechanism(name, name, enforcing, note.format(peers=peers)))
    return mechs, setup


def phase2_observer(
    lab: Lab, args: argparse.Namespace, workdir: Path
) -> tuple[Observer, ControlPlane | None, list[str], str]:
    """The real agent with its control plane (or, failing that, the observation pieces); returns the
    observer, the control plane (None for the pieces), the peers and why the pieces were used."""
    why = ""
    if args.observer in ("auto", "daemon"):
        host = lab.add_host("observed")
        peers = peer_addresses(args.peers, host.client_ip)
        daemon: AgentDaemon | None = None
        try:
            cp = ControlPlane(lab, lab.add_control_plane(host), workdir, args.other_cpu)
            cp.start()
            token = cp.ok(
                "POST",
                "/api/v1/enrollment-tokens",
                {"name": "bench", "labels": {"app": WORKLOAD}, "mode": "enforce", "reusable": True},
            )["token"]
            cp.ok("POST", "/api/v1/apply", {"documents": policy_objects(peers)})
            cp.ok("POST", "/api/v1/versions", {"note": "bench policy"})
            daemon = AgentDaemon(lab, host, workdir, args.cpu, server=cp.url, token=token)
            daemon.start(timeout=90)
            return daemon, cp, peers, why
        except RuntimeError as exc:
            if daemon is not None:
                daemon.stop()
            if args.observer == "daemon":
                raise
            why = f"the agent daemon was not usable: {str(exc)[-300:]}"
            print(f"note: {why}; using the observation pieces", flush=True)
            lab.hosts.pop("observed")
    host = lab.add_host("observed-pieces")
    peers = peer_addresses(args.peers, host.client_ip)
    run(in_ns(host.ns, ["nft", "-f", "-"]), stdin=agent_script(peers, host.server_ip))
    return ObservationPieces(lab, host, workdir, args.cpu, args.peers), None, peers, why


def observe_mechanisms(observer: Observer, args: argparse.Namespace) -> list[Mechanism]:
    """observer-off, agent+observe (same CPU) and agent+observe on the other CPU, all on one host."""
    host = observer.host.key
    what = "the agent daemon" if isinstance(observer, AgentDaemon) else "the observation pieces"
    return [
        Mechanism("observer-off", host, True, f"rules of {what}, nothing observing", observer.stop),
        Mechanism(
            "agent+observe",
            host,
            True,
            f"{what} observing, on CPU {args.cpu} with client and server",
            lambda: observer.use_cpu(args.cpu),
            observer,
        ),
        Mechanism(
            f"agent+observe@cpu{args.other_cpu}",
            host,
            True,
            f"{what} observing, on CPU {args.other_cpu}",
            lambda: observer.use_cpu(args.other_cpu),
            observer,
        ),
    ]


# --------------------------------------------------------------------------- summary


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(samples: Sequence[Sample], mechs: Sequence[Mechanism]) -> dict[str, dict[str, Any]]:
    """Per mechanism: medians over rounds."""
    rows: dict[str, dict[str, Any]] = {}
    for mech in mechs:
        mine = [s for s in samples if s.mechanism == mech.name]
        if mine:
            rows[mech.name] = {
                "rounds": len(mine),
                "cps": median([s.cps for s in mine]),
                "cps_min": min(s.cps for s in mine),
                "cps_max": max(s.cps for s in mine),
                "connect_p50_us": median([s.connect_p50_us for s in mine]),
                "connect_p99_us": median([s.connect_p99_us for s in mine]),
                "errors": sum(s.errors for s in mine),
                "observer_cpu_us_per_conn": median([s.extra.get("observer_cpu_us_per_conn") for s in mine]),
                "events_per_conn": median([s.extra.get("events_per_conn") for s in mine]),
            }
    return rows


def ratio(samples: Sequence[Sample], top: str, bottom: str) -> dict[str, Any] | None:
    """`top` / `bottom` cps: ratio of the medians, and the median (and range) of per-round ratios."""
    by = {(s.round, s.mechanism): s.cps for s in samples}
    rnds = sorted({s.round for s in samples if (s.round, top) in by and (s.round, bottom) in by})
    if not rnds:
        return None
    per_round = [by[(r, top)] / by[(r, bottom)] for r in rnds]
    tops, bottoms = [by[(r, top)] for r in rnds], [by[(r, bottom)] for r in rnds]
    return {
        "of_medians": statistics.median(tops) / statistics.median(bottoms),
        "paired": statistics.median(per_round),
        "paired_min": min(per_round),
        "paired_max": max(per_round),
    }


def ratios(samples: Sequence[Sample], other_cpu: int) -> list[dict[str, Any]]:
    """The ratios bench/report.py judges (on the paired figure, against bench/targets.py) and the
    reference ones."""
    wanted = [
        ("agent", "conntrack-only"),
        ("agent", "iptables-linear"),
        ("agent+observe", "observer-off"),
        (f"agent+observe@cpu{other_cpu}", "observer-off"),
        ("observer-off", "agent"),
        ("none-aa", "none"),
        ("conntrack-only", "none"),
        ("agent", "none"),
        ("iptables-linear", "none"),
        ("none", "iptables-linear"),
        ("agent", "iptables-nft-linear"),
    ]
    out = []
    for top, bottom in wanted:
        r = ratio(samples, top, bottom)
        if r is not None:
            out.append({"top": top, "bottom": bottom, **r})
    return out


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted, or '-'."""
    return "-" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    """The tables for BENCHMARKS.md."""
    lines = [
        "| mechanism | what | cps (median) | min-max | connect p50 / p99 us | load ms | checks |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, row in result["rows"].items():
        setup = result["setup"].get(result["hosts"][name], {})
        checks = "ok" if setup.get("checks_ok") else "**failed** " + json.dumps(setup.get("checks"))
        lines.append(
            f"| {name} | {result['notes'].get(name, '')} | {row['cps']:,.0f} | {row['cps_min']:,.0f}-"
            f"{row['cps_max']:,.0f} | {row['connect_p50_us']:.1f} / {row['connect_p99_us']:.1f} | "
            f"{fmt(setup.get('load_ms'), '.1f')} | {checks} |"
        )
    lines += ["", "| ratio (cps) | paired (median of rounds) | rounds min-max | of medians |"]
    lines.append("|---|---:|---:|---:|")
    for r in result["ratios"]:
        lines.append(
            f"| {r['top']} / {r['bottom']} | {r['paired']:.3f} | {r['paired_min']:.3f}-"
            f"{r['paired_max']:.3f} | {r['of_medians']:.3f} |"
        )
    lines += ["", *phase2_lines(result)]
    return "\n".join(lines)


def phase2_lines(result: dict[str, Any]) -> list[str]:
    """Footprint, latency and observer counts as a small table."""
    out = ["| phase 2 | target | measured | |", "|---|---|---|---|"]
    for name, row in result["rows"].items():
        if row.get("observer_cpu_us_per_conn") is not None:
            out.append(
                f"| {name}: observer CPU per connection | - | {row['observer_cpu_us_per_conn']:.1f} us | - |"
            )
        if row.get("events_per_conn") is not None:
            out.append(
                f"| {name}: NEW events received per connection | 1 | {row['events_per_conn']:.3f} | - |"
            )
    fp = result.get("footprint")
    if fp:
        out.append(
            f"| {fp['observer']} CPU idle ({fp['idle_secs']:.0f} s) | - "
            f"| {fp['idle_cpu_percent']:.2f} % of a core | - |"
        )
        out.append(
            f"| {fp['observer']} CPU at {fp['paced_rate']:.0f} new conn/s ({fp['paced_secs']:.0f} s after "
            f"{fp['paced_ramp_secs']:.0f} s) | see report "
            f"| {fp['cpu_percent']:.2f} % of a core | - |"
        )
        out.append(
            f"| {fp['observer']} RSS (peak) | see report | {fp['VmRSS'] / 1024:.1f} MB "
            f"({fp['VmHWM'] / 1024:.1f} MB) | - |"
        )
    lat = result.get("provision")
    if lat:
        rest = lat["after_first"]
        out.append(
            f"| provision -> enforced ({lat['provisions']} provisions) | - | p50 {lat['p50_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms (max {lat['max_ms']:.0f}; POST /versions p50 "
            f"{lat['post_versions_p50_ms']:.0f} ms) | - |"
        )
        out.append(
            f"| ... the first one / the others | - | {lat['first_ms']:.0f} ms / p50 {rest['p50_ms']:.0f} ms, "
            f"p99 {rest['p99_ms']:.0f} ms | - |"
        )
        applied = lat.get("agent_receive_to_applied_p50_ms")
        out.append(
            f"| ... of which the agent: document received -> applied (its log) | - "
            f"| p50 {fmt(applied, '.0f')} ms | - |"
        )
    counted = result.get("pieces_counted")
    if counted:
        out.append(f"| observation pieces' counts since their last start | - | {json.dumps(counted)} | - |")
    for note in result.get("phase2_notes", []):
        out.append(f"| not measured | - | {note} | - |")
    return out


# --------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "ncpu": os.cpu_count(),
        "python": platform.python_version(),
        "nft": run(["nft", "--version"]).strip(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", type=int, default=5_000, help="addresses in the allowed peer list")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--secs", type=float, default=2.0, help="seconds per connection storm")
    parser.add_argument("--warmup", type=float, default=0.2, help="unmeasured storm before each one")
    parser.add_argument("--loads", type=int, default=3, help="timed ruleset loads per host")
    parser.add_argument("--cpu", type=int, default=0, help="CPU of client, server and the observing agent")
    parser.add_argument("--other-cpu", type=int, default=1, help="CPU of the control plane (and @cpuN)")
    parser.add_argument("--observer", choices=("auto", "daemon", "pieces", "none"), default="auto")
    parser.add_argument("--paced-rate", type=float, default=500)
    parser.add_argument("--paced-secs", type=float, default=20)
    parser.add_argument("--paced-ramp", type=float, default=10, help="paced seconds before CPU is counted")
    parser.add_argument("--idle-secs", type=float, default=10)
    parser.add_argument("--provisions", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short storms, 3 provisions")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON result goes")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--keep", type=Path, help="keep logs and state in this directory (default: a temp dir)"
    )
    parser.add_argument("--observer-child", metavar="NS", help=argparse.SUPPRESS)
    parser.add_argument("--observer-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.secs, args.warmup, args.loads = 1, 0.5, 0.1, 1
        args.paced_secs, args.paced_ramp, args.idle_secs, args.provisions = 3, 1, 1, 3
    return args


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the lab, measure everything, tear the lab down (whatever happens)."""
    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    cps = build_cps(str(workdir))
    with Lab(cps, args.cpu) as lab:
        mechs, setup = phase1_mechanisms(lab, args.peers, args.loads)
        units: list[list[Mechanism]] = [[m] for m in mechs]
        observer: Observer | None = None
        cp: ControlPlane | None = None
        peers: list[str] = []
        why, notes = "", []
        if args.observer != "none":
            observer, cp, peers, why = phase2_observer(lab, args, workdir)
            observe = observe_mechanisms(observer, args)
            units.append(observe)
            mechs += observe
            setup[observer.host.key] = {"checks": lab.checks(observer.host), "enforcing": True}
        samples = rounds(lab, units, args.rounds, args.secs, args.warmup)
        if observer is not None:
            result["footprint"] = agent_footprint(lab, observer, args)
            if isinstance(observer, ObservationPieces):
                observer.stop()
                result["pieces_counted"] = observer.counted()
                notes.append(
                    f"provision -> enforced latency needs the agent daemon ({why or 'pieces chosen'})"
                )
        if cp is not None and observer is not None:
            result["provision"] = provision_latency(cp, observer.host, peers, args.provisions)
            log = (workdir / f"{observer.name}.log").read_text(errors="replace")
            result["provision"]["agent_receive_to_applied_p50_ms"] = receive_to_applied_ms(
                log, args.provisions
            )
            # the peak once it has parsed, rendered and applied every new document as well
            result["provision"]["agent_memory_kb"] = memory_kb(observer.pid)
            observer.stop()
            result["observer_starts"] = observer.starts
        for key, entry in setup.items():
            entry["checks_after"] = lab.checks(lab.hosts[key])
            tables = run(in_ns(lab.hosts[key].ns, ["nft", "-s", "list", "ruleset"]))
            (workdir / f"ruleset-{key}.nft").write_text(tables)
            entry["nft_rules"] = sum(1 for line in tables.splitlines() if " comment " in line)
            entry["checks_ok"] = (
                entry["checks"] == entry["checks_after"] == expected_checks(entry["enforcing"])
            )
    rows = summarize(samples, mechs)
    result.update(
        peers=args.peers,
        notes={m.name: m.note for m in mechs},
        hosts={m.name: m.host for m in mechs},
        setup=setup,
        rows=rows,
        ratios=ratios(samples, args.other_cpu),
        phase2_notes=notes + ([why] if why else []),
        samples=[vars(s) for s in samples],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run the benchmark; the result (also printed, and written unless --no-write)."""
    args = parse_args(argv)
    if args.observer_child:
        observer_child(args.observer_child, args.peers, args.observer_index, args.out)
        return None
    if os.geteuid() != 0:
        sys.exit("bench_agent.py needs root (network namespaces, nft, iptables)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the lab is torn down
    tools = (
        "gcc",
        "nft",
        "nsenter",
        "taskset",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "conntrack",
    )
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"bench_agent.py needs {', '.join(missing)}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run_all(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ms-bench-agent-") as tmp:
            result = run_all(args, Path(tmp))
    print(markdown(result))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    main()
