"""The reconciler against real nftables (and the iptables fallback) inside ms- namespaces: it
applies a document whole, finds tampering by the ruleset generation and restores it, keeps the
previous rules when a document cannot be applied, uninstall removes only our table, and traffic
counts against the rule that decided it, across restores and new documents, without being drift."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from microseg import settings as config
from microseg.agent import dataplane, knowledge, netns, procfs, reconciler
from microseg.model import ruleset
from tests.agent import stack
from tests.conftest import require
from tests.render import documents
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

pytestmark = pytest.mark.netns
SERVER = "10.77.250.2"
NOTHING = knowledge.Knowledge({}, {})


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter", "ipset", "iptables-restore", "ip6tables-restore")
    with labnet.lab() as the_lab:
        the_lab.serve(the_lab.b, SERVER, tcp=(8080, 8081, 8082))
        yield the_lab


def _doc() -> ruleset.RulesetDocument:
    return documents.server_doc().with_hash()


def _mysqld_doc(*ports: int | tuple[int, int]) -> ruleset.RulesetDocument:
    """Clients may reach `ports` when mysqld serves them."""
    spec = documents.spec(documents.TCP, *ports)
    db = documents.entry("application/db", documents.ALLOW, spec, peers=("clients",), process="mysqld")
    return replace(_doc(), ingress=(db,)).with_hash()


def _reconciler(plane: dataplane.Dataplane, tampers: list[reconciler.Tamper]) -> reconciler.Reconciler:
    return reconciler.Reconciler(plane, learn=lambda doc: NOTHING, on_tamper=tampers.append)


def test_apply_then_flush_ruleset_is_restored_and_reported(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.NftDataplane(config.RenderSettings()), tampers)
        rec.desire(_doc())
        assert rec.status.applied_hash == _doc().hash and not rec.status.errors
        assert lab.tcp(lab.a, SERVER, 8080) == "open"
        assert lab.tcp(lab.a, SERVER, 8082) == "timeout"
        rec.tick()
        assert tampers == []  # nothing changed: the generation says so without listing
        lab.run(lab.b, "nft", "flush", "ruleset")
        assert lab.tcp(lab.a, SERVER, 8082) == "open"
        rec.tick()
        assert [t.drift.summary for t in tampers] == ["the table was deleted"]
        assert lab.tcp(lab.a, SERVER, 8082) == "timeout"
        assert lab.tcp(lab.a, SERVER, 8080) == "open"

    netns.run_in(lab.b, body)


def test_an_edited_rule_is_named_in_the_drift_and_put_back(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.NftDataplane(config.RenderSettings()), tampers)
        rec.desire(_doc())
        lab.run(lab.b, "nft", "insert", "rule", "inet", "microseg", "input", "tcp", "dport", "8082", "accept")
        assert lab.tcp(lab.a, SERVER, 8082) == "open"
        rec.tick()
        assert len(tampers) == 1
        assert tampers[0].drift.summary == "0 line(s) removed, 1 added"
        assert any(
            "tcp dport 8082 accept" in line and line.startswith("+") for line in tampers[0].drift.changes
        )
        assert lab.tcp(lab.a, SERVER, 8082) == "timeout"

    netns.run_in(lab.b, body)


def test_other_tables_changing_is_not_tampering(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.NftDataplane(config.RenderSettings()), tampers)
        rec.desire(_doc())
        lab.nft(lab.b, "table inet someone_else { chain c { }; }")
        rec.tick()
        assert tampers == []

    netns.run_in(lab.b, body)


def test_a_document_that_cannot_be_applied_leaves_the_previous_rules(lab: labnet.Lab) -> None:
    process_doc = _mysqld_doc(8082)
    missing = knowledge.Knowledge({"mysqld": "ms-no-such-cgroup/mysqld"}, {})

    def body() -> None:
        rec = _reconciler(dataplane.NftDataplane(config.RenderSettings()), [])
        rec.desire(_doc())
        before = lab.run(lab.b, "nft", "-s", "list", "table", "inet", "microseg").stdout
        rec.learn = lambda doc: missing if doc is process_doc else NOTHING
        rec.desire(process_doc)
        assert rec.status.errors and "NftError" in rec.status.errors[0]
        assert rec.status.applied_hash == _doc().hash
        assert lab.run(lab.b, "nft", "-s", "list", "table", "inet", "microseg").stdout == before
        assert lab.tcp(lab.a, SERVER, 8080) == "open"

    netns.run_in(lab.b, body)


def test_a_process_nobody_runs_is_enforced_at_port_level_and_said(lab: labnet.Lab) -> None:
    doc = _mysqld_doc(8082)

    def body() -> None:
        rec = reconciler.Reconciler(dataplane.NftDataplane(config.RenderSettings()), learn=knowledge.learn)
        rec.desire(doc)
        assert not rec.status.errors
        assert any("process mysqld not enforced" in w for w in rec.status.warnings)
        assert lab.tcp(lab.a, SERVER, 8082) == "open"

    netns.run_in(lab.b, body)


def _packets(rec: reconciler.Reconciler) -> dict[str, int]:
    return {ref: c.packets for ref, c in rec.counters().rules.items()}


def _grew(before: dict[str, int], after: dict[str, int], *refs: str) -> bool:
    return all(after.get(ref, 0) > before.get(ref, 0) for ref in refs)


def _not_lower(before: dict[str, int], after: dict[str, int]) -> bool:
    return all(after.get(ref, 0) >= n for ref, n in before.items())


COUNTED = ("application/web", "security/no-8081", "default")
"""What a probe of 8080 (allowed), 8081 (denied in security) and 8082 (default deny) hits."""


def _probe(lab: labnet.Lab) -> None:
    assert [lab.tcp(lab.a, SERVER, port) for port in (8080, 8081, 8082)] == ["open", "timeout", "timeout"]


def test_traffic_counts_against_its_rule_and_counters_are_not_drift(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.NftDataplane(config.RenderSettings()), tampers)
        rec.desire(_doc())
        start = rec.counters()
        _probe(lab)
        counted = _packets(rec)
        assert _grew({ref: c.packets for ref, c in start.rules.items()}, counted, *COUNTED), counted
        assert "application/udp" not in counted or counted["application/udp"] == 0
        assert lab.counters(lab.b)["application/web"] == counted["application/web"]  # what nft says
        lab.nft(lab.b, "table inet someone_else { chain c { }; }")  # the generation moves: a listing
        rec.tick()
        assert tampers == []  # counters changed since the apply, and that is not tampering
        lab.run(lab.b, "nft", "flush", "ruleset")
        rec.tick()
        assert len(tampers) == 1
        restored = _packets(rec)
        assert _not_lower(counted, restored) and rec.counters().epoch == start.epoch
        _probe(lab)
        again = _packets(rec)
        assert _grew(restored, again, *COUNTED)
        rec.desire(documents.server_doc(retired=False).with_hash())  # a new document: a new table
        assert _not_lower(again, _packets(rec))
        _probe(lab)
        assert _grew(again, _packets(rec), *COUNTED) and rec.counters().epoch == start.epoch

    netns.run_in(lab.b, body)


def test_iptables_fallback_counts_per_rule_across_a_restore(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.IptablesDataplane(config.RenderSettings()), tampers)
        try:
            rec.desire(_doc())
            _probe(lab)
            counted = _packets(rec)
            assert _grew({}, counted, *COUNTED), counted
            rec.tick()
            assert tampers == []
            subprocess.run(["iptables", "-Z", "MS-INPUT"], check=True, timeout=10)  # zeroing is no drift
            rec.tick()
            assert tampers == [] and _not_lower(counted, _packets(rec))
            subprocess.run(["iptables", "-F", "MS-IN-application"], check=True, timeout=10)
            rec.tick()
            assert len(tampers) == 1 and _not_lower(counted, _packets(rec))
            _probe(lab)
            assert _grew(counted, _packets(rec), *COUNTED)
        finally:
            rec.plane.remove()

    netns.run_in(lab.b, body)


def test_uninstall_removes_only_our_table(lab: labnet.Lab) -> None:
    netns.run_in(
        lab.b, lambda: _reconciler(dataplane.NftDataplane(config.RenderSettings()), []).desire(_doc())
    )
    lab.nft(lab.b, "table inet someone_else { chain c { }; }")
    removed = dataplane.uninstall(lab.b)
    assert removed == ["nftables table inet microseg"]
    listing = lab.run(lab.b, "nft", "list", "tables").stdout
    assert "someone_else" in listing and "microseg" not in listing
    assert lab.tcp(lab.a, SERVER, 8082) == "open"
    assert dataplane.uninstall(lab.b) == []


def test_iptables_fallback_applies_restores_and_removes(lab: labnet.Lab) -> None:
    tampers: list[reconciler.Tamper] = []

    def body() -> None:
        rec = _reconciler(dataplane.IptablesDataplane(config.RenderSettings()), tampers)
        rec.desire(_doc())
        assert rec.status.dataplane == "iptables" and not rec.status.errors
        assert lab.tcp(lab.a, SERVER, 8080) == "open"
        assert lab.tcp(lab.a, SERVER, 8082) == "timeout"
        subprocess.run(["iptables", "-F", "MS-INPUT"], check=True, timeout=10)
        assert lab.tcp(lab.a, SERVER, 8082) == "open"
        rec.tick()
        assert len(tampers) == 1 and tampers[0].drift.changes
        assert lab.tcp(lab.a, SERVER, 8082) == "timeout"
        rec.plane.remove()
        assert (
            "MS-" not in subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        )
        assert lab.tcp(lab.a, SERVER, 8082) == "open"

    netns.run_in(lab.b, body)


def test_a_process_rule_admits_only_the_named_process_by_its_cgroup(lab: labnet.Lab, tmp_path: Path) -> None:
    """mysqld (in its own cgroup) and a rogue process both serve ports the rule names: only mysqld
    is reachable, because the kernel matches the listening socket's cgroup."""
    mount = procfs.cgroup2_mount()
    root = Path("/sys/fs/cgroup", mount)
    require((root / "cgroup.procs").exists(), "needs a cgroup v2 hierarchy")
    group = root / f"ms-{lab.a[3:9]}" / "mysqld"
    group.mkdir(parents=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name, port, cgroup in (("mysqld", 8083, group), ("rogue", 8084, None)):
            enter = f"echo $$ > {cgroup / 'cgroup.procs'} && " if cgroup else ""
            command = f'{enter}exec nsenter --net=/run/netns/{lab.b} {sys.executable} -c "$0" {SERVER} {name} {port}'
            children.append(subprocess.Popen(["sh", "-c", command, stack.SERVE]))
        for port in (8083, 8084):
            stack.wait_for(f"port {port}", lambda p=port: stack.reach(lab, lab.a, SERVER, p) == "open")
        doc = _mysqld_doc((8083, 8084))

        def body() -> reconciler.Status:
            rec = reconciler.Reconciler(dataplane.NftDataplane(config.RenderSettings(cgroup2_mount=mount)))
            rec.desire(doc)
            return rec.status

        status = netns.run_in(lab.b, body)
        assert not status.errors and not status.warnings
        listing = lab.run(lab.b, "nft", "list", "table", "inet", "microseg").stdout
        assert (
            f'socket cgroupv2 level 2 "{mount + "/" if mount else ""}{group.parent.name}/mysqld"' in listing
        )
        assert stack.reach(lab, lab.a, SERVER, 8083) == "open"
        assert stack.reach(lab, lab.a, SERVER, 8084, timeout=0.3) == "timeout"
    finally:
        for child in children:
            child.kill()
            child.wait(10)
        group.rmdir()
        group.parent.rmdir()


ASK = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
print("ready", flush=True)
for _ in sys.stdin:
    try:
        socket.create_connection((sys.argv[2], 8080), timeout=0.5).close()
        print("open", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""
"""A client that tries one connection to the server's 8080 per line it reads."""


def test_an_egress_process_rule_lets_only_that_client_out(lab: labnet.Lab) -> None:
    mount = procfs.cgroup2_mount()
    root = Path("/sys/fs/cgroup", mount)
    require((root / "cgroup.procs").exists(), "needs a cgroup v2 hierarchy")
    group = root / f"ms-{lab.a[3:9]}e" / "ms-goodcli"
    group.mkdir(parents=True)
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, cgroup in (("ms-goodcli", group), ("ms-badcli", None)):
            enter = f"echo $$ > {cgroup / 'cgroup.procs'} && " if cgroup else ""
            command = f'{enter}exec nsenter --net=/run/netns/{lab.a} {sys.executable} -c "$0" {name} {SERVER}'
            clients[name] = subprocess.Popen(["sh", "-c", command, ASK], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True)  # fmt: skip

        def ask(name: str) -> str:
            client = clients[name]
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write("\n")
            client.stdin.flush()
            return client.stdout.readline().strip()

        for client in clients.values():
            assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        assert ask("ms-goodcli") == ask("ms-badcli") == "open"
        spec = documents.spec(documents.TCP, 8080)
        out = documents.entry(
            "application/to-web", documents.ALLOW, spec, peers=("servers",), process="ms-goodcli"
        )
        doc = replace(documents.client_doc(), egress=(out,)).with_hash()

        def body() -> reconciler.Status:
            rec = reconciler.Reconciler(dataplane.NftDataplane(config.RenderSettings(cgroup2_mount=mount)))
            rec.desire(doc)
            return rec.status

        status = netns.run_in(lab.a, body)
        assert not status.errors and not status.warnings
        assert ask("ms-goodcli") == "open"
        assert ask("ms-badcli") in ("PermissionError", "TimeoutError")  # dropped by its own output chain
    finally:
        for client in clients.values():
            client.kill()
            client.wait(10)
            for stream in (client.stdin, client.stdout):
                if stream is not None:
                    stream.close()
        group.rmdir()
        group.parent.rmdir()
