"""Expired rules cut their connections, against real nftables and conntrack in two ms- namespaces.

    ns a (10.77.250.1): clients, one byte every 0.2 s    ns b (10.77.250.2): echo server, reconciler

b's document allows tcp/7201 from a only until a few seconds from now (`exception/temp`) and
tcp/7202 with no end (`application/steady`). When the window closes, the kernel's time match stops
new connections by itself; the reconciler's expiry cutter removes the conntrack entry of the
connection only the expired rule allowed, so it stalls, while the other one carries on. In alert
mode nothing is cut; an agent started after the expiry still cuts (the look-back).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from microseg import settings as config
from microseg.agent import conntrack, dataplane, expiry, knowledge, netns, reconciler
from microseg.model import ruleset, workloads
from tests.agent import stack
from tests.render import documents
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

pytestmark = pytest.mark.netns
EXPIRING, STEADY = 7201, 7202
TICK = 0.5
WINDOW = 4
"""Seconds from now to the expiry (whole seconds, as in documents)."""


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter")
    with labnet.lab() as the_lab:
        the_lab.serve(the_lab.b, the_lab.addr_b, tcp=(EXPIRING, STEADY))
        yield the_lab


class Talker:
    """One TCP connection from a to b: a byte every 0.2 s, each waiting at most 1 s for its echo.
    Ends at the first error, at `close` or after 60 s (bounded traffic)."""

    def __init__(self, lab: labnet.Lab, port: int) -> None:
        self.sock = lab.connect(lab.a, lab.addr_b, port, timeout=1.0)
        self.client_port: int = self.sock.getsockname()[1]
        self.echoes = 0
        self.error: OSError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._talk, daemon=True)
        self._thread.start()

    def _talk(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.wait(0.2) and time.monotonic() < deadline:
            try:
                self.sock.sendall(b"x")
                if self.sock.recv(1) != b"x":
                    raise ConnectionResetError("closed by b")
            except OSError as exc:
                self.error = exc
                return
            self.echoes += 1

    def carries_data(self) -> bool:
        """Whether echoes still arrive (within a little over a second)."""
        seen = self.echoes
        deadline = time.monotonic() + 2
        while self.error is None and time.monotonic() < deadline:
            if self.echoes > seen:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self.sock.close()


def _doc(mode: workloads.Mode, not_after: int) -> ruleset.RulesetDocument:
    temp = documents.entry("exception/temp", documents.ALLOW, documents.spec(documents.TCP, EXPIRING),
                           peers=("clients",), not_after=not_after)  # fmt: skip
    steady = documents.entry("application/steady", documents.ALLOW, documents.spec(documents.TCP, STEADY),
                             peers=("clients",))  # fmt: skip
    return documents.document(
        ingress=(temp, steady),
        sets=(documents.aset("clients", "10.77.250.1"),),
        mode=mode,
        workload="lab-b",
        tiers=("exception", "application"),
    ).with_hash()


def _reconciler(
    ns: str, cutter: expiry.ExpiryCutter | None, found: list[expiry.Expiry]
) -> reconciler.Reconciler:
    def make() -> reconciler.Reconciler:
        plane = dataplane.NftDataplane(config.RenderSettings())
        nothing = knowledge.Knowledge({}, {})
        return reconciler.Reconciler(plane, learn=lambda doc: nothing, cutter=cutter, on_expired=found.append)

    return netns.run_in(ns, make)


@contextlib.contextmanager
def ticking(ns: str, rec: reconciler.Reconciler) -> Iterator[None]:
    """The agent's timer: `rec.tick()` every TICK seconds from a thread inside `ns`."""
    stop = threading.Event()

    def loop() -> None:
        netns.enter(ns)  # this thread only, and it ends with the test
        while not stop.wait(TICK):
            rec.tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def talkers(lab: labnet.Lab) -> Iterator[tuple[Talker, Talker]]:
    with contextlib.ExitStack() as closing:
        pair = Talker(lab, EXPIRING), Talker(lab, STEADY)
        for talker in pair:
            closing.callback(talker.close)
        yield pair


def _tracked(lab: labnet.Lab, talker: Talker) -> bool:
    """Whether b's conntrack table holds the talker's connection."""
    table = netns.run_in(lab.b, conntrack.dump)
    return any(ev.sport == talker.client_port and ev.src == lab.addr_a for ev in table)


def _wait_past(not_after: int) -> None:
    time.sleep(max(0.0, not_after - time.time()))


def test_the_expired_rules_connection_is_cut_and_the_other_carries_on(lab: labnet.Lab) -> None:
    found: list[expiry.Expiry] = []
    not_after = int(time.time()) + WINDOW
    rec = _reconciler(lab.b, expiry.ExpiryCutter(), found)
    netns.run_in(lab.b, lambda: rec.desire(_doc(workloads.Mode.ENFORCE, not_after)))
    with ticking(lab.b, rec), talkers(lab) as (temp, steady):
        assert temp.carries_data() and steady.carries_data()
        assert _tracked(lab, temp)
        _wait_past(not_after)
        stack.wait_for("the expiry to be handled", lambda: found, timeout=3 * TICK + 2)
        assert [(e.ref, e.not_after, e.cut, e.would_cut) for e in found] == [
            ("exception/temp", not_after, 1, 0)
        ]
        stack.wait_for("the cut connection to stall", lambda: temp.error, timeout=5)
        assert isinstance(temp.error, TimeoutError), temp.error
        assert not _tracked(lab, temp)
        assert steady.carries_data() and steady.error is None
        assert lab.tcp(lab.a, lab.addr_b, EXPIRING) == "timeout"
        assert lab.tcp(lab.a, lab.addr_b, STEADY) == "open"
    assert not rec.status.errors


def test_alert_mode_keeps_the_connection_and_counts_it(lab: labnet.Lab) -> None:
    found: list[expiry.Expiry] = []
    not_after = int(time.time()) + WINDOW
    rec = _reconciler(lab.b, expiry.ExpiryCutter(), found)
    netns.run_in(lab.b, lambda: rec.desire(_doc(workloads.Mode.ALERT, not_after)))
    events = netns.run_in(lab.b, conntrack.ConntrackListener)
    with contextlib.closing(events), ticking(lab.b, rec), talkers(lab) as (temp, steady):
        assert temp.carries_data()
        _wait_past(not_after)
        stack.wait_for("the expiry to be handled", lambda: found, timeout=3 * TICK + 2)
        assert [(e.ref, e.cut, e.would_cut) for e in found] == [("exception/temp", 0, 1)]
        assert temp.carries_data() and steady.carries_data()
        assert temp.error is None and _tracked(lab, temp)
        destroyed = [ev for ev in events.read()[0] if ev.kind == "destroy" and ev.sport == temp.client_port]
        assert destroyed == []


def test_an_agent_started_after_the_expiry_still_cuts(lab: labnet.Lab) -> None:
    found: list[expiry.Expiry] = []
    not_after = int(time.time()) + WINDOW
    doc = _doc(workloads.Mode.ENFORCE, not_after)
    before = _reconciler(lab.b, None, found)  # enforcing, but cutting nothing: as if it had stopped
    netns.run_in(lab.b, lambda: before.desire(doc))
    with talkers(lab) as (temp, steady):
        assert temp.carries_data()
        _wait_past(not_after + 1)
        assert temp.carries_data(), "the kernel's time match alone leaves established connections"
        assert lab.tcp(lab.a, lab.addr_b, EXPIRING) == "timeout"
        after = _reconciler(lab.b, expiry.ExpiryCutter(), found)
        netns.run_in(lab.b, lambda: after.desire(doc))
        assert [(e.ref, e.cut) for e in found] == [("exception/temp", 1)]
        stack.wait_for("the cut connection to stall", lambda: temp.error, timeout=5)
        assert not _tracked(lab, temp)
        assert steady.carries_data()
