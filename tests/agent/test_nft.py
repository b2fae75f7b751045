"""`agent.nft` against real nf_tables in an ms- namespace: rule counters read over netlink are what
`nft -j list` says, a missing table has none, and a listing of a large set leaves nothing of it in
the agent's memory (a libnftables context keeps its ruleset cache until it is freed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from microseg.agent import heap, netns, nft
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

pytestmark = pytest.mark.netns
SERVER = "10.77.250.2"
PEERS = 5000


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter")
    with labnet.lab() as the_lab:
        the_lab.serve(the_lab.b, SERVER, tcp=(8080,))
        yield the_lab


def _table(peers: int) -> str:
    """Our table with a set of `peers` addresses (every other one, so none merge into a range)
    that admits the lab's client, and counted rules with and without comments."""
    base = ipaddress.ip_address("10.60.0.1")
    elements = ", ".join(str(base + 2 * i) for i in range(peers))
    return (
        "table inet microseg\ndelete table inet microseg\n"
        "table inet microseg {\n"
        f"\tset peers {{ type ipv4_addr; flags interval; elements = {{ {elements}, 10.77.250.1 }} }}\n"
        "\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
        '\t\tct state established,related counter accept comment "system/established"\n'
        '\t\tip saddr @peers tcp dport 8080 counter accept comment "application/web"\n'
        "\t\ttcp dport 8081 counter accept\n"
        '\t\tcounter counter drop comment "default"\n'
        "\t}\n}\n"
    )


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_rule_counters_are_what_nft_lists(lab: labnet.Lab) -> None:
    lab.nft(lab.b, _table(50))
    for _ in range(3):
        assert lab.tcp(lab.a, SERVER, 8080) == "open"
    for _ in range(50):  # the connections' last packets may still be counted: until nothing moves
        listed = lab.counters(lab.b)
        found = netns.run_in(lab.b, lambda: nft.rule_counters("inet", "microseg"))
        if lab.counters(lab.b) == listed:
            break
    by_comment: dict[str, int] = {}
    for comment, packets, _bytes in found:
        by_comment[comment] = by_comment.get(comment, 0) + packets
    assert by_comment.pop("") == 0  # the rule without a comment counted nothing
    assert by_comment == listed
    assert by_comment["application/web"] == 3
    assert len([c for c in found if c[0] == "default"]) == 2  # one per counter statement
    assert all(nbytes > 0 for comment, packets, nbytes in found if packets)


def test_a_missing_table_has_no_rule_counters(lab: labnet.Lab) -> None:
    lab.nft(lab.b, "table inet someone_else { chain c { counter; }; }")
    assert netns.run_in(lab.b, lambda: nft.rule_counters("inet", "microseg")) == []


def test_a_listing_leaves_no_ruleset_cache_behind(lab: labnet.Lab) -> None:
    if not heap.available():
        pytest.skip("the C library cannot give freed memory back (not glibc)")

    def body() -> int:
        plane = nft.Nft()
        if plane.backend != "libnftables":
            pytest.skip("no libnftables: every call is an nft process")
        plane.run(_table(10))
        plane.list_table("inet", "microseg")  # whatever a first call loads once is loaded now
        script = _table(PEERS)
        before = _rss_kb()
        plane.run(script)
        for _ in range(3):
            assert plane.list_table("inet", "microseg") is not None
        return _rss_kb() - before

    # Contexts kept for reuse (one to load, one to list) held 11 MB of their caches of the set.
    assert netns.run_in(lab.b, body) < 2048
