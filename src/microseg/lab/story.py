"""The demo's story in seven steps, each acted out on the lab with real connections.

    1 flat network       the attacker host reaches the database (bytes there and back)
    2 visibility         the agents' flows become a dependency map (table, HTML, PNG)
    3 recommendation     least-privilege rules with coverage -> draft -> simulated on history -> provision
    4 alert, enforce     env=prod to alert: the attacker's try is logged as would-block; readiness;
                         env=prod to enforce
    5 lateral movement   the attacker's and a compromised web server's tries, each blocked by a rule
    6 tampering          `nft flush ruleset` on db-1; its agent restores the table
    7 incident response  a signed EDR webhook quarantines web-1; release restores it

Fed by a lab that is up in visibility mode with the starter policy (`demo.lab_options`); feeds
the scorecard through each step's `StepLog`. Each step depends on the state the one before left
(the modes, the provisioned version), like the chapters of one story; a step that fails still
leaves the next something to show. What is learnt excludes the attacker's probe of step 1 (the
recommendation's window starts after it), which is what a reviewer would reject anyway.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.lab import mapfiles, scorecard, state, topology, watch

HOOK_NAME = "edr"
"""The webhook caller the demo plays: an EDR tool that holds no API token, only its secret."""
SCOPE = "env=prod"
"""The rollout scope: production goes to alert, then enforce; development stays in visibility."""
MAP_GROUPS = {"groupBy": "role", "within": "env"}
RECOMMEND_GROUPS = "env,role"
PAYLOAD = b"SELECT * FROM customers;"
SETTLE = 2.0
"""Seconds after the attacker's probe before the learning window opens (a flow's last-seen time is
when its agent saw it end, a little after the connection)."""
LEARN_TIMEOUT = 60.0
SYNC_TIMEOUT = 30.0
ALERT_SAMPLE = 40
"""Connections of the scope seen in alert mode before readiness is judged (a few seconds' traffic)."""
REPORT_TIMEOUT = 20.0
"""Seconds for a connection to show up as a flow record (agents upload in batches)."""


@dataclass(frozen=True)
class Attempt:
    """A lateral-movement try the demo makes in step 5."""

    src: str
    dst: str
    port: int
    story: str


ATTEMPTS = (
    Attempt("attacker", "db-1", 3306, "the intruder on the jump host goes for the database"),
    Attempt("web-1", "db-1", 3306, "a compromised web server skips the app tier"),
    Attempt("web-1", "db-1", 22, "the web server tries ssh onward"),
    Attempt("dev-web-1", "app-1", 8080, "development reaches into production"),
)
APPLICATION = (
    ("lb", "web-1", 80),
    ("web-1", "app-1", 8080),
    ("app-1", "db-1", 3306),
    ("app-2", "cache-1", 6379),
    ("attacker", "db-1", 22),
)
"""What must keep working under enforcement (the jump host's ssh is its job)."""


_RESULTS = {"timeout": "dropped", "eperm": "refused by the sender's own agent"}


class Story:
    """The seven steps over one lab."""

    def __init__(self, lab: state.LabState, top: topology.Topology, secret: str, out_dir: Path) -> None:
        self.lab, self.top, self.secret, self.out_dir = lab, top, secret, out_dir
        self.watch = watch.LabWatch(lab)
        self.learn_since = time.time()
        self.alert_since = time.time()

    def close(self) -> None:
        """Close the connections to the control plane."""
        self.watch.close()

    def steps(self) -> list[scorecard.Step]:
        """The steps in order."""
        return [
            ("a flat network: the attacker reaches the database", self.flat_network),
            ("visibility: the agents' flows become a dependency map", self.visibility),
            ("recommendation: least-privilege rules, simulated on history", self.recommendation),
            ("alert, then enforce: the rollout of env=prod", self.alert_then_enforce),
            ("lateral movement: blocked, each by its rule", self.lateral_movement),
            ("tampering: a host's firewall is flushed", self.tampering),
            ("incident response: a webhook quarantines a web server", self.incident_response),
        ]

    # --- 1 --------------------------------------------------------------------------------------

    def flat_network(self, log: scorecard.StepLog) -> None:
        w = self.watch
        log.progress("the attacker connects to db-1:3306")
        back = w.talk("attacker", "db-1", 3306, PAYLOAD)
        log.check("attacker -> db-1:3306 connects", back == len(PAYLOAD))
        log.line(
            f"attacker ({w.ip('attacker')}) -> db-1 ({w.ip('db-1')}):3306: connected, sent "
            f"{len(PAYLOAD)} bytes ({PAYLOAD.decode()!r}), {back} came back from mysqld"
        )
        rows = []
        for attempt in ATTEMPTS[1:]:
            result = w.reach(attempt.src, attempt.dst, attempt.port)
            log.check(f"{attempt.src} -> {attempt.dst}:{attempt.port} connects", result == "open", result)
            rows.append((f"{attempt.src} -> {attempt.dst}:{attempt.port}", result))
        log.table(("attempt", "result"), rows)
        self.learn_since = time.time() + SETTLE
        opened = sum(1 for c in log.result.checks if c.ok)
        log.summary(f"{opened} of {len(ATTEMPTS)} attack paths open: nothing stops lateral movement")

    # --- 2 --------------------------------------------------------------------------------------

    def visibility(self, log: scorecard.StepLog) -> None:
        w = self.watch
        expected = self.top.flows()
        log.progress(f"learning: waiting for the application's {len(expected)} normal flows to be reported")

        def learnt() -> dict[str, Any] | None:
            graph: dict[str, Any] = w.get("/flows/map", since=f"{self.learn_since:.3f}", **MAP_GROUPS)
            missing = _missing(graph, expected)
            log.progress(f"learning: {len(expected) - len(missing)} of {len(expected)} normal flows reported")
            return None if missing else graph

        watch.wait("every normal flow on the map", learnt, LEARN_TIMEOUT, every=0.5)
        graph = w.get("/flows/map", **MAP_GROUPS)
        log.check("every normal flow of the application is on the map", True)
        log.check("the attacker's connection is on the map", _has_edge(graph, "attacker", "db-1", 3306))
        rows = mapfiles.edge_rows(graph)
        channel = f"{urllib.parse.urlsplit(self.lab.server).port}/tcp"
        shown = [r for r in rows if r.ports != channel]
        log.table(
            ("from", "to", "ports (serving process)", "conns", "verdict"),
            [(r.source, r.destination, r.ports, str(r.connections), r.verdict) for r in shown],
        )
        log.line(
            f"(and {len(rows) - len(shown)} edges of the agents' own channel to the control plane, {channel})"
        )
        dot = w.text("/flows/map", format="dot", **MAP_GROUPS)
        files = mapfiles.write(self.out_dir, dot, rows, "microseg demo: the lab's dependency map")
        log.check("map page written", files.html.is_file(), str(files.html))
        log.check("map picture written", files.png is not None and _is_png(files.png), files.note)
        log.line(f"written: {files.html}" + (f", {files.png}" if files.png else f" ({files.note})"))
        seconds = time.time() - self.learn_since
        log.summary(
            f"{len(graph['nodes'])} groups, {len(graph['edges'])} edges learnt in {seconds:.0f} s; "
            "all of them allowed: visibility blocks nothing, the network is flat"
        )

    # --- 3 --------------------------------------------------------------------------------------

    def recommendation(self, log: scorecard.StepLog) -> None:
        w = self.watch
        window = {"groupBy": RECOMMEND_GROUPS, "since": f"{self.learn_since:.3f}"}
        log.progress("recommending least-privilege rules from the normal traffic")
        proposed = w.get("/flows/recommend", **window)
        documents = proposed["documents"]
        rules = [
            (d["spec"]["tier"], r) for d in documents if d["kind"] == "Policy" for r in d["spec"]["rules"]
        ]
        named = {d["metadata"]["name"]: _service_text(d["spec"]) for d in documents if d["kind"] == "Service"}
        log.table(("from", "to", "service"), [_rule_row(rule, named) for _, rule in rules])
        log.check("rules recommended", bool(rules), f"{len(rules)} rules")
        coverage = proposed["coverage"]
        log.check("coverage of the learnt flows is 100%", coverage >= 100.0, f"{coverage}%")
        log.line(
            f"{len(rules)} rules cover {coverage}% of the {proposed['flows']} flows seen since the "
            f"attacker's probe (the learning window); {len(proposed['leftOut'])} left out"
        )
        w.send("POST", "/flows/recommend/accept", **window)
        log.progress("simulating the draft against every flow seen so far")
        allowing = {f"{tier}/{rule['name']}" for tier, rule in rules}
        denied = self._simulate(log, allowing)
        log.progress("provisioning the draft")
        version = w.send("POST", "/versions", {"note": "microseg demo: least privilege learnt from flows"})
        w.wait_in_sync(SYNC_TIMEOUT)
        log.check("provisioned and every agent in sync", bool(version))
        log.summary(
            f"{len(rules)} rules, coverage {coverage}%; replayed, the draft denies "
            f"{sum(g['connections'] for g in denied)} connection(s), all of them the attacks; "
            f"version {version['number'] if version else '?'} provisioned"
        )

    def _simulate(self, log: scorecard.StepLog, allowing: set[str]) -> list[dict[str, Any]]:
        """The draft replayed on all history: what it newly allows, and what it denies (in
        visibility nothing is blocked yet, so those are `unchanged`: denied before and after)."""
        w = self.watch
        groups = w.get("/flows/simulate")["groups"]
        newly = sum(g["connections"] for g in groups if g["change"] == "newly-allowed")
        denied = [g for g in groups if g["rule"] not in allowing and not g["rule"].startswith("system/")]
        log.line(
            f"replayed on every flow so far, the draft newly allows {newly} connections (the application)"
        )
        log.table(
            ("the draft denies", "rule", "conns"),
            [(e["flow"], g["rule"], str(e["connections"])) for g in denied for e in g["examples"]],
        )
        attacker = f"({w.ip('attacker')}) -> db-1 ({w.ip('db-1')}) 3306"
        caught = any(attacker in e["flow"] for g in denied for e in g["examples"])
        log.check("the simulation denies the attacker's connection", caught)
        innocent = [g["source"] for g in denied if not _involves_attack(g, w)]
        log.check("the draft denies nothing of the application", not innocent, ", ".join(innocent))
        return denied

    # --- 4 --------------------------------------------------------------------------------------

    def alert_then_enforce(self, log: scorecard.StepLog) -> None:
        w = self.watch
        log.progress(f"promoting {SCOPE} to alert")
        w.send("POST", "/rollout/promote", {"scope": SCOPE, "to": "alert", "note": "microseg demo"})
        w.wait_in_sync(SYNC_TIMEOUT)
        self.alert_since = time.time()
        result = w.reach("attacker", "db-1", 3306)
        log.check("in alert mode the attacker still connects", result == "open", result)
        log.progress("waiting for the would-block report")
        would = watch.wait(
            "the would-block flow",
            lambda: w.flows(
                "db-1", self.alert_since, verdict="would-block", dport=3306, src=w.ip("attacker")
            ),
            REPORT_TIMEOUT,
        )
        log.check("reported as would-block, with the deciding rule", bool(would[0].get("rule")))
        log.line(
            f"attacker -> db-1:3306 went through and was logged as would-block: "
            f"{_rule_text(would[0]['rule'])} (reported by db-1's agent)"
        )
        forced = self._readiness(log)
        w.send(
            "POST",
            "/rollout/promote",
            {
                "scope": SCOPE,
                "to": "enforce",
                "since": f"{self.alert_since:.3f}",
                "force": forced,
                "note": "microseg demo",
            },
        )
        w.wait_in_sync(SYNC_TIMEOUT)
        blocked = watch.wait(
            "enforcement at db-1",
            lambda: w.reach("attacker", "db-1", 3306, 0.3) in watch.BLOCKED,
            10.0,
            every=0.1,
        )
        log.check(f"{SCOPE} enforces: attacker -> db-1:3306 is dropped", blocked)
        log.summary(
            f"alert logged the attack without blocking; {SCOPE} enforced"
            + (" (forced: the only would-block flows were the attacker's)" if forced else "")
        )

    def _readiness(self, log: scorecard.StepLog) -> bool:
        """Whether enforcing needs force: only when what is not ready is the attack itself."""
        log.progress("measuring readiness over the alert window")

        def measured() -> dict[str, Any] | None:
            report: dict[str, Any] = self.watch.get(
                "/rollout/readiness", scope=SCOPE, since=f"{self.alert_since:.3f}"
            )
            seen = report["connections"]["total"]
            log.progress(f"readiness: {seen} connections of {SCOPE} in alert mode so far")
            return report if seen >= ALERT_SAMPLE else None

        report = watch.wait("enough alert-mode traffic", measured, REPORT_TIMEOUT, every=1.0)
        seen = report["connections"]
        log.line(
            f"readiness over {time.time() - self.alert_since:.0f} s of alert mode: {seen['total']} "
            f"connections, {seen['allowed']} allowed, {seen['wouldBlockSeen']} would-block"
        )
        checks = report["checks"]
        log.table(
            ("readiness check", "value", "limit", "ok"),
            [(n, str(c["value"]), str(c["limit"]), "yes" if c["ok"] else "no") for n, c in checks.items()],
        )
        failed = [n for n, c in checks.items() if c["ok"] is False]
        attacker = self.watch.ip("attacker")
        only_attack = all(attacker in u["flow"] for u in report["uncovered"])
        if not failed:
            log.check("ready for enforce without force", True)
            return False
        log.check(
            "what is not ready is the attack alone",
            only_attack and "agentsInSync" not in failed,
            "; ".join(u["flow"] for u in report["uncovered"]),
        )
        log.line(
            f"not ready by the book ({', '.join(failed)}): the only uncovered flows are the attacker's, "
            "which we want blocked, so the promotion is forced (audited as override-readiness)"
        )
        return True

    # --- 5 --------------------------------------------------------------------------------------

    def lateral_movement(self, log: scorecard.StepLog) -> None:
        w = self.watch
        for src, dst, port in APPLICATION:
            result = w.reach(src, dst, port)
            log.check(f"{src} -> {dst}:{port} still works", result == "open", result)
        rows = []
        for attempt in ATTEMPTS:
            log.progress(f"{attempt.src} -> {attempt.dst}:{attempt.port}: {attempt.story}")
            rows.append(self._attempt(log, attempt))
        log.table(("attempt", "result", "stopped by", "deciding rule"), [r[:4] for r in rows])
        for row in rows:
            log.line(f"{row[0]}: {row[4]}")
        stopped = sum(1 for c in log.result.checks if c.ok and c.name.endswith(" blocked"))
        log.summary(
            f"{stopped} of {len(ATTEMPTS)} attempts blocked, each named by its rule; "
            f"the application's {len(APPLICATION)} paths still work"
        )

    def _attempt(self, log: scorecard.StepLog, attempt: Attempt) -> tuple[str, ...]:
        w = self.watch
        started = time.time()
        result = w.reach(attempt.src, attempt.dst, attempt.port, timeout=0.5)
        name = f"{attempt.src} -> {attempt.dst}:{attempt.port}"
        log.check(f"{name} blocked", result in watch.BLOCKED, result)

        def blocked_flow() -> list[dict[str, Any]]:
            return [
                f
                for host in (attempt.src, attempt.dst)
                for f in w.flows(host, started, verdict="blocked", dport=attempt.port, src=w.ip(attempt.src))
            ]

        found = watch.wait(f"the blocked flow {name}", blocked_flow, REPORT_TIMEOUT)[0]
        verdict = w.explain(attempt.src, attempt.dst, attempt.port)
        log.check(f"{name} reported with its rule", bool(found.get("rule")), str(found.get("rule")))
        where = f"{found['workload']} ({'egress' if found['direction'] == 'out' else 'ingress'})"
        return (
            name,
            _RESULTS.get(result, result),
            where,
            _rule_text(found["rule"]),
            str(verdict.get("reason", "")),
        )

    # --- 6 --------------------------------------------------------------------------------------

    def tampering(self, log: scorecard.StepLog) -> None:
        w = self.watch
        started = time.time()
        log.progress("nft flush ruleset inside db-1's namespace")
        w.nft("db-1", "flush", "ruleset")
        flushed = time.monotonic()
        watch.wait(
            "db-1's table back", lambda: "microseg" in w.nft("db-1", "list", "tables"), 10.0, every=0.05
        )
        restored = time.monotonic() - flushed
        log.check("the agent restored its table within 2 s", restored <= 2.0, f"{restored:.2f} s")
        event = watch.wait("the tamper event", lambda: w.events("tamper", "db-1", started), REPORT_TIMEOUT)[0]
        log.check(
            "a tamper event with the diff", bool(event.get("details", {}).get("changes")), event["message"]
        )
        w.wait_in_sync(SYNC_TIMEOUT)
        # dev-web-1 is not enforced (only env=prod is), so only db-1's restored rules can drop this.
        result = w.reach("dev-web-1", "db-1", 3306, timeout=0.5)
        log.check(
            "db-1 enforces again (dev-web-1 -> db-1:3306 dropped by db-1)", result in watch.BLOCKED, result
        )
        log.line(f"tamper event: {event['message']}")
        log.summary(
            f"db-1's firewall flushed; its agent put the table back (seen within {restored:.2f} s), "
            "reported as tamper"
        )

    # --- 7 --------------------------------------------------------------------------------------

    def incident_response(self, log: scorecard.StepLog) -> None:
        w = self.watch
        before = w.get("/workloads/web-1")
        started = time.time()
        log.progress("the EDR tool calls the signed webhook: web-1 is compromised")
        w.hook(
            HOOK_NAME,
            self.secret,
            {
                "address": w.ip("web-1"),
                "level": "full",
                "alert": "EDR-4711",
                "reason": "C2 beacon from nginx on web-1",
            },
        )
        asked = time.monotonic()
        watch.wait(
            "web-1 isolated", lambda: w.reach("lb", "web-1", 80, 0.2) in watch.BLOCKED, 10.0, every=0.05
        )
        isolated = time.monotonic() - asked
        log.check("web-1 isolated within 2 s", isolated <= 2.0, f"{isolated:.2f} s")
        result = w.reach("web-1", "app-1", 8080, timeout=0.5)
        log.check("web-1 can no longer reach app-1", result in watch.BLOCKED, result)
        log.check("web-2 still serves", w.reach("lb", "web-2", 80) == "open")
        event = watch.wait(
            "the quarantine event", lambda: w.events("quarantine", "web-1", started), REPORT_TIMEOUT
        )[0]
        log.line(f"quarantine event: {event['message']}")
        log.progress("the incident is closed: the EDR tool releases web-1")
        w.hook(
            HOOK_NAME,
            self.secret,
            {"address": w.ip("web-1"), "action": "release", "alert": "EDR-4711", "reason": "reimaged"},
        )
        back = watch.wait("web-1 back", lambda: w.reach("lb", "web-1", 80, 0.3) == "open", 10.0, every=0.05)
        after = w.get("/workloads/web-1")
        same = _labels_and_mode(after) == _labels_and_mode(before)
        log.check("release restores web-1's labels and mode exactly", back and same)
        log.summary(
            f"quarantined by a signed webhook in {isolated:.2f} s (web-1 -> app-1: {result}); "
            "released to exactly its former labels and mode"
        )


# --- reading the control plane's answers ------------------------------------------------------------


def _members(graph: Mapping[str, Any]) -> dict[str, set[str]]:
    return {n["id"]: set(n.get("members", [])) for n in graph.get("nodes", [])}


def _has_edge(graph: Mapping[str, Any], src: str, dst: str, port: int) -> bool:
    members = _members(graph)
    return any(
        src in members.get(e["source"], set())
        and dst in members.get(e["destination"], set())
        and any(p.get("port") == port for p in e.get("ports", []))
        for e in graph.get("edges", [])
    )


def _missing(graph: Mapping[str, Any], expected: Sequence[topology.Flow]) -> list[topology.Flow]:
    return [f for f in expected if not _has_edge(graph, f.source, f.target, f.port)]


def _is_png(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


def _peer_text(peers: list[dict[str, Any]]) -> str:
    return ", ".join(str(p.get("selector") or p.get("ipList") or p.get("cidr") or p) for p in peers)


def _rule_row(rule: Mapping[str, Any], named: Mapping[str, str]) -> tuple[str, ...]:
    services = rule.get("services", [])
    if isinstance(services, str):
        return (_peer_text(rule["from"]), _peer_text(rule["to"]), services)
    shown = ", ".join(named.get(s, s) if isinstance(s, str) else _service_text(s) for s in services)
    return (_peer_text(rule["from"]), _peer_text(rule["to"]), shown)


def _service_text(service: Mapping[str, Any]) -> str:
    ports = ",".join(str(p.get("port")) for p in service.get("ports", []))
    protocol = service.get("ports", [{}])[0].get("protocol", "tcp") if service.get("ports") else "tcp"
    process = f" {service['process']}" if service.get("process") else ""
    return f"{ports}/{protocol}{process}"


def _rule_text(rule: str) -> str:
    return "default deny (no rule allows it)" if rule == "default" else rule


def _involves_attack(group: Mapping[str, Any], w: watch.LabWatch) -> bool:
    """A simulated group made of the demo's own probes of step 1 (from the attacker, the
    compromised web server, development)."""
    probes = {w.ip(a.src) for a in ATTEMPTS}
    return all(any(f"({ip})" in e["flow"].split(" -> ")[0] for ip in probes) for e in group["examples"])


def _labels_and_mode(workload: Mapping[str, Any]) -> tuple[Any, Any]:
    return workload["metadata"].get("labels"), workload["spec"].get("mode")
