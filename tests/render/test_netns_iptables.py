"""Real iptables + ipset in a two-namespace lab: the fallback gives the same connection results.

Loads `iptables.render` output with `ipset restore` and `iptables-restore --noflush` /
`ip6tables-restore --noflush` inside a lab namespace and repeats the nftables lab's probes, plus
what is particular to the fallback: the first-install form, the re-apply form keeping exactly one
jump from INPUT/OUTPUT, and sets swapped to their new members.
"""

from __future__ import annotations

import pytest

from microseg.model import workloads
from microseg.render import iptables
from tests.render import netns
from tests.render.documents import LAB_TCP, LAB_UDP, client_doc, server_doc
from tests.render.test_netns_nftables import DENIED_REFS, EGRESS_ENFORCED, EVERYTHING_PASSES, INGRESS_ENFORCED

pytestmark = pytest.mark.netns

ENFORCE, ALERT = workloads.Mode.ENFORCE, workloads.Mode.ALERT


def load(lab: netns.Lab, ns: str, result: iptables.IptablesRender, *, install: bool) -> None:
    """The agent's order: sets first (rules refer to them), then both families' chains."""
    lab.run(ns, "ipset", "restore", text_in=result.ipset)
    lab.run(ns, "iptables-restore", "--noflush", text_in=result.v4_install if install else result.v4)
    lab.run(ns, "ip6tables-restore", "--noflush", text_in=result.v6_install if install else result.v6)


@pytest.mark.parametrize(
    ("mode", "expected", "kind"),
    [(ENFORCE, INGRESS_ENFORCED, "d"), (ALERT, EVERYTHING_PASSES, "w")],
    ids=["enforce", "alert"],
)
def test_ingress(lab: netns.Lab, mode: workloads.Mode, expected: dict[str, str], kind: str) -> None:
    lab.serve(lab.b, lab.addr_b, LAB_TCP, LAB_UDP)
    load(lab, lab.b, iptables.render(server_doc(mode)), install=True)
    with netns.NflogReader(lab, lab.b, group=7) as log:
        assert lab.probe(lab.a, lab.addr_b, expected) == expected
        prefixes = set(log.prefixes(wait=0.3))
    assert prefixes == {f"ms:{kind}:{ref}" for ref in DENIED_REFS}


def test_egress(lab: netns.Lab) -> None:
    lab.serve(lab.b, lab.addr_b, LAB_TCP, LAB_UDP)
    load(lab, lab.a, iptables.render(client_doc()), install=True)
    assert lab.probe(lab.a, lab.addr_b, EGRESS_ENFORCED) == EGRESS_ENFORCED


def test_reapply_swaps_sets_and_keeps_one_jump(lab: netns.Lab) -> None:
    lab.serve(lab.b, lab.addr_b, LAB_TCP, LAB_UDP)
    load(lab, lab.b, iptables.render(server_doc()), install=True)
    with lab.connect(lab.a, lab.addr_b, 8080) as established:
        load(lab, lab.b, iptables.render(server_doc(clients=("10.77.250.99",))), install=False)
        load(lab, lab.b, iptables.render(server_doc(clients=("10.77.250.99",))), install=False)
        assert lab.tcp(lab.a, lab.addr_b, 8080) == "timeout"
        assert netns.echoes(established)
    members = lab.run(lab.b, "ipset", "list", "ms4-clients").stdout.split("Members:\n")[1].split()
    assert members == ["10.77.250.99"]
    assert lab.run(lab.b, "ipset", "list", "-n").stdout.split() == [
        "ms4-clients",
        "ms6-clients",
        "ms4-retired",
        "ms6-retired",
    ]
    for tool, chain in (("iptables", "INPUT"), ("iptables", "OUTPUT"), ("ip6tables", "INPUT")):
        rules = lab.run(lab.b, tool, "-S", chain).stdout.splitlines()
        assert rules[1:] == [f"-A {chain} -m comment --comment microseg -j MS-{chain}"], (tool, rules)
