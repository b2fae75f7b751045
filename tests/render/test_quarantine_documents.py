"""What the agent of a quarantined workload enforces when peers inside the forensics list are
quarantined too: the rendered nftables accept a peer only if both ends' quarantine keeps the other
(`full` keeps nobody, `true` keeps the forensics list), as the engine's verdict says."""

from __future__ import annotations

import pytest

from microseg.engine import engine
from microseg.model import addresses, estate, iplists, workloads
from microseg.render import nftables, nftverify
from tests.engine.estates import TCP, wl

FORENSICS = iplists.IpList("forensics", (addresses.network("10.77.250.0/24"),))
STATION = "10.77.250.9"
"""The forensics station: in the list, no workload."""
AT = {"jump": "10.77.250.5", "analyst": "10.77.250.6", "peer": "10.77.250.7", "suspect": "10.77.0.7"}


def quarantined_estate() -> estate.Estate:
    return estate.Estate(
        workloads=(
            wl("jump", AT["jump"], quarantine="full"),
            wl("analyst", AT["analyst"], quarantine="true"),
            wl("peer", AT["peer"], quarantine="true"),
            wl("suspect", AT["suspect"], quarantine="true"),
        ),
        ip_lists=(FORENSICS,),
        quarantine_allow="forensics",
    )


def rendered(eng: engine.PolicyEngine, name: str) -> nftverify.Program:
    return nftverify.parse(nftables.render(eng.document(name)).text)


def decide(
    eng: engine.PolicyEngine, source: str, destination: str, hosts: dict[str, str] = AT
) -> tuple[str, str | None]:
    """What the hosts' hooks do with a new SSH connection from `source` to `destination` (names of
    `hosts`, or addresses): the first drop and its ref, else the destination's accept and its ref."""
    saddr = addresses.address(hosts.get(source, source))
    daddr = addresses.address(hosts.get(destination, destination))
    verdicts = []
    for end, hook in ((source, "output"), (destination, "input")):
        if end not in hosts:
            continue
        packet = nftverify.Packet(family=4, saddr=saddr, daddr=daddr, l4proto="tcp", dport=22)
        found = nftverify.evaluate(rendered(eng, end), hook, packet)
        verdicts.append((found.verdict, found.ref))
    dropped = [v for v in verdicts if v[0] == "drop"]
    return dropped[0] if dropped else verdicts[-1]


BLOCKED = [
    ("suspect", "jump"),
    ("jump", "suspect"),
    ("analyst", "jump"),
    ("jump", "analyst"),
    ("suspect", "analyst"),
    ("analyst", "suspect"),
]
KEPT = [
    (STATION, "analyst"),
    ("analyst", STATION),
    (STATION, "suspect"),
    ("analyst", "peer"),
    ("peer", "analyst"),
]


@pytest.mark.parametrize(("source", "destination"), BLOCKED, ids=[f"{s}-to-{d}" for s, d in BLOCKED])
def test_no_document_lets_a_quarantined_peer_through_beyond_its_own_level(
    source: str, destination: str
) -> None:
    eng = engine.PolicyEngine(quarantined_estate())
    assert decide(eng, source, destination) == ("drop", "quarantine/isolate-in")
    verdict = eng.evaluate(eng.endpoint(source), eng.endpoint(destination), 22, TCP)
    assert (verdict.outcome.value, verdict.rule) == ("blocked", "quarantine/isolate-in")


@pytest.mark.parametrize(("source", "destination"), KEPT, ids=[f"{s}-to-{d}" for s, d in KEPT])
def test_the_forensics_list_stays_reachable_both_ways(source: str, destination: str) -> None:
    eng = engine.PolicyEngine(quarantined_estate())
    verdict, ref = decide(eng, source, destination)
    assert verdict == "accept" and ref is not None and ref.startswith("quarantine/allow-forensics-")


def test_a_document_follows_a_peer_put_in_quarantine_later() -> None:
    """Quarantining a workload inside the list changes the documents of the quarantined hosts that
    kept it (the refused peers are a set the agent is told about)."""
    eng = engine.PolicyEngine(quarantined_estate())
    eng.upsert_workload(wl("station", STATION))
    hosts = {**AT, "station": STATION}
    assert decide(eng, "station", "analyst", hosts)[0] == "accept"
    delta = eng.upsert_workload(wl("station", STATION, quarantine="full"))
    assert "analyst" in delta.workloads
    assert decide(eng, "station", "analyst", hosts) == ("drop", "quarantine/isolate-in")


def test_a_full_quarantine_inside_the_list_keeps_no_allowance() -> None:
    doc = engine.PolicyEngine(quarantined_estate()).document("jump")
    refs = {e.ref for e in (*doc.ingress, *doc.egress)}
    assert not {r for r in refs if "allow-forensics" in r}, refs
    assert doc.mode is workloads.Mode.ENFORCE
