"""Real nftables in a two-namespace lab: the rendered ruleset does to connections what it says.

Loads `nftables.render` output with `nft -f` inside a lab namespace and probes with real TCP and
UDP from the other one: allowed ports connect (and echo), denied ones time out, in enforce, alert
and visibility mode, ingress and egress; NFLOG delivers the `ms:d:`/`ms:w:` prefixes; counters
trace hits back to rule references; a new document replaces the table in one transaction (old set
elements and sets gone, established connections kept, a broken script changes nothing); and
`render_delete` removes our table only.
"""

from __future__ import annotations

import json

import pytest

from microseg.model import workloads
from microseg.render import nftables
from tests.render import netns
from tests.render.documents import LAB_TCP, LAB_UDP, client_doc, server_doc

pytestmark = pytest.mark.netns

ENFORCE, ALERT, VISIBILITY = workloads.Mode.ENFORCE, workloads.Mode.ALERT, workloads.Mode.VISIBILITY
EVERYTHING_PASSES = {
    "tcp/8080": "open",
    "tcp/8081": "open",
    "tcp/8082": "open",
    "udp/9090": "echo",
    "udp/9091": "echo",
}
INGRESS_ENFORCED = {
    "tcp/8080": "open",
    "tcp/8081": "timeout",  # security/no-8081
    "tcp/8082": "timeout",  # default deny
    "udp/9090": "echo",
    "udp/9091": "timeout",  # security/no-udp-9091
}
EGRESS_ENFORCED = {**INGRESS_ENFORCED, "udp/9091": "eperm"}  # a local drop is reported to the sender
DENIED_REFS = ("security/no-8081", "default", "security/no-udp-9091")


def serve(lab: netns.Lab) -> None:
    lab.serve(lab.b, lab.addr_b, LAB_TCP, LAB_UDP)


@pytest.mark.parametrize(
    ("mode", "expected", "kind"),
    [
        (ENFORCE, INGRESS_ENFORCED, "d"),
        (ALERT, EVERYTHING_PASSES, "w"),
        (VISIBILITY, EVERYTHING_PASSES, None),
    ],
    ids=["enforce", "alert", "visibility"],
)
def test_ingress(lab: netns.Lab, mode: workloads.Mode, expected: dict[str, str], kind: str | None) -> None:
    serve(lab)
    lab.nft(lab.b, nftables.render(server_doc(mode)).text)
    with netns.NflogReader(lab, lab.b, group=7) as log:
        assert lab.probe(lab.a, lab.addr_b, expected) == expected
        prefixes = set(log.prefixes(wait=0.3))
    assert prefixes == ({f"ms:{kind}:{ref}" for ref in DENIED_REFS} if kind else set())
    counters = lab.counters(lab.b)
    assert counters["application/web"] >= 1 and counters["application/udp"] >= 1
    assert all(counters[ref] >= 1 for ref in DENIED_REFS)


@pytest.mark.parametrize(
    ("mode", "expected"), [(ENFORCE, EGRESS_ENFORCED), (ALERT, EVERYTHING_PASSES)], ids=["enforce", "alert"]
)
def test_egress(lab: netns.Lab, mode: workloads.Mode, expected: dict[str, str]) -> None:
    serve(lab)
    lab.nft(lab.a, nftables.render(client_doc(mode)).text)
    assert lab.probe(lab.a, lab.addr_b, expected) == expected
    counters = lab.counters(lab.a)
    assert counters["application/to-web"] >= 2 and counters["security/no-udp-9091"] >= 1


def set_elements(lab: netns.Lab, name: str) -> list[str]:
    listing = json.loads(lab.run(lab.b, "nft", "-j", "list", "set", "inet", "microseg", name).stdout)
    (the_set,) = [item["set"] for item in listing["nftables"] if "set" in item]
    return [str(e) for e in the_set.get("elem", [])]


def test_new_document_replaces_the_table_atomically(lab: netns.Lab) -> None:
    serve(lab)
    lab.nft(lab.b, nftables.render(server_doc()).text)
    with lab.connect(lab.a, lab.addr_b, 8080) as established:
        assert netns.echoes(established)
        lab.nft(lab.b, nftables.render(server_doc(clients=("10.77.250.99",), retired=False)).text)
        assert lab.tcp(lab.a, lab.addr_b, 8080) == "timeout"  # new connections follow the new set
        assert netns.echoes(established)  # the established one is not cut
    assert set_elements(lab, "clients_v4") == ["10.77.250.99"]
    assert lab.run(lab.b, "nft", "list", "set", "inet", "microseg", "retired_v4", check=False).returncode != 0


def test_a_broken_script_changes_nothing(lab: netns.Lab) -> None:
    serve(lab)
    lab.nft(lab.b, nftables.render(server_doc()).text)
    broken = nftables.render(server_doc(clients=("10.77.250.99",))).text.replace(
        "\tchain in_security {\n", "\tchain in_security {\n\t\tip saddr @missing_v4 accept\n"
    )
    assert lab.run(lab.b, "nft", "-f", "-", text_in=broken, check=False).returncode != 0
    assert set_elements(lab, "clients_v4") == ["10.77.250.1"]
    assert lab.tcp(lab.a, lab.addr_b, 8080) == "open"


def test_render_delete_removes_only_our_table(lab: netns.Lab) -> None:
    lab.nft(lab.a, "table inet keep {\n\tchain c {\n\t}\n}\n")
    lab.nft(lab.a, nftables.render(client_doc()).text)

    def tables() -> list[str]:
        return lab.run(lab.a, "nft", "list", "tables").stdout.splitlines()

    assert tables() == ["table inet keep", "table inet microseg"]
    lab.nft(lab.a, nftables.render_delete())
    lab.nft(lab.a, nftables.render_delete())  # idempotent: removing an absent table succeeds
    assert tables() == ["table inet keep"]
