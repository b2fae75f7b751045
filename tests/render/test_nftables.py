"""The nftables renderer: shape of the script, names, limits, modes, warnings.

Meaning is checked wholesale by the translation property test; these pin down the decisions a
reader should see stated once: atomic replacement, the system rules before any tier, what invalid
packets get in each mode, log prefixes, the rate-limit split and how unknown processes are reported.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from microseg import settings as config
from microseg.errors import ValidationError
from microseg.model import addresses, workloads
from microseg.render import names, nftables, nftverify
from tests.render import netns
from tests.render.documents import ALLOW, DENY, ICMP, PASS, SCENARIOS, TCP, UDP, aset, document, entry, spec

ENFORCE, ALERT, VISIBILITY = workloads.Mode.ENFORCE, workloads.Mode.ALERT, workloads.Mode.VISIBILITY


def evaluate(doc_text: str, hook: str = "input", **fields: object) -> nftverify.Decision:
    """The verdict for one packet from 10.77.1.1 to 10.77.250.2 (overridable)."""
    values: dict[str, object] = {
        "family": 4,
        "saddr": addresses.address("10.77.1.1"),
        "daddr": addresses.address("10.77.250.2"),
        "l4proto": "tcp",
        "dport": 80,
    }
    values.update(fields)
    return nftverify.evaluate(nftverify.parse(doc_text), hook, nftverify.Packet(**values))  # type: ignore[arg-type]


def test_script_replaces_the_table_in_one_batch() -> None:
    text = nftables.render(SCENARIOS["enforce"].doc).text
    assert text.startswith("table inet microseg\ndelete table inet microseg\ntable inet microseg {\n")
    assert "flush" not in text


def test_table_name_comes_from_settings_and_must_be_an_identifier() -> None:
    text = nftables.render(SCENARIOS["empty"].doc, config.RenderSettings(table="ms_test")).text
    assert text.startswith("table inet ms_test\ndelete table inet ms_test\n")
    with pytest.raises(ValidationError):
        nftables.render(SCENARIOS["empty"].doc, config.RenderSettings(table='x" }'))


def test_render_delete_names_only_our_table() -> None:
    assert nftables.render_delete() == "table inet microseg\ndelete table inet microseg\n"
    program = nftverify.parse(nftables.render_delete(config.RenderSettings(table="other")))
    assert program.table == "other" and program.replaces and not program.defined


def test_members_are_collapsed() -> None:
    doc = document(sets=(aset("halves", "10.77.0.0/25", "10.77.0.128/25"),))
    program = nftverify.parse(nftables.render(doc).text)
    assert program.sets["halves_v4"] == (4, (addresses.network("10.77.0.0/24"),))


def test_a_set_family_without_members_is_not_declared_nor_named_by_a_rule() -> None:
    """An IPv4-only estate carries no `_v6` sets and no IPv6 rules for them: such a rule matches
    nothing. A set that gains an IPv6 member brings its set and rule back."""
    web = entry("application/web", ALLOW, spec(TCP, 80), peers=("clients",))
    text = nftables.render(document((web,), sets=(aset("clients", "10.77.1.0/24"), aset("none")))).text
    assert "_v6" not in text and "none_v4" not in text
    assert text.count('comment "application/web"') == 1
    program = nftverify.parse(text)
    assert set(program.sets) == {"clients_v4"}
    assert evaluate(text, saddr=addresses.address("10.77.1.5")).ref == "application/web"
    both = nftables.render(document((web,), sets=(aset("clients", "10.77.1.0/24", "2001:db8::/64"),))).text
    assert set(nftverify.parse(both).sets) == {"clients_v4", "clients_v6"}
    assert "ip6 saddr @clients_v6 tcp dport 80" in both


def test_odd_set_names_become_unique_identifiers() -> None:
    assert names.nft_identifier("clients") == "clients"
    odd = names.nft_identifier("db.prod/primary")
    assert odd.startswith("db_prod_primary_") and odd != names.nft_identifier("db_prod_primary")
    assert names.nft_identifier("9lives")[0].isalpha()
    assert len(names.nft_identifier("x" * 300, 60)) <= 60
    with pytest.raises(ValidationError):
        names.unique({"a": "same", "b": "same"}, "set")


@pytest.mark.parametrize(
    ("mode", "verdict", "prefix"),
    [
        (ENFORCE, "drop", ("ms:d:default",)),
        (ALERT, "accept", ("ms:w:default",)),
        (VISIBILITY, "accept", ()),
    ],
    ids=["enforce", "alert", "visibility"],
)
def test_default_deny_by_mode(mode: workloads.Mode, verdict: str, prefix: tuple[str, ...]) -> None:
    got = evaluate(nftables.render(document(mode=mode)).text, dport=9999)
    assert (got.verdict, got.ref, got.log_prefixes) == (verdict, "default", prefix)


@pytest.mark.parametrize(("mode", "verdict"), [(ENFORCE, "drop"), (ALERT, "accept"), (VISIBILITY, "accept")])
def test_invalid_packets_are_dropped_only_in_enforce_mode(mode: workloads.Mode, verdict: str) -> None:
    got = evaluate(nftables.render(document(mode=mode)).text, ct_state="invalid")
    assert (got.verdict, got.ref, got.logged) == (verdict, "system/invalid", False)


@pytest.mark.parametrize("hook", ["input", "output"])
def test_system_rules_come_before_any_tier(hook: str) -> None:
    deny_all = document(
        ingress=(entry("security/all", DENY, spec(TCP)), entry("security/udp", DENY, spec(UDP))),
        egress=(entry("security/all", DENY, spec(TCP)),),
    )
    text = nftables.render(deny_all).text
    assert evaluate(text, hook, ct_state="established").ref == "system/established"
    assert evaluate(text, hook, ct_state="related").ref == "system/established"
    assert evaluate(text, hook, iif="lo", oif="lo").ref == "system/loopback"
    control = addresses.address("10.77.250.9")
    assert evaluate(text, hook, daddr=control, dport=8443).ref == "system/control-plane"
    assert evaluate(text, hook, saddr=control, dport=8443).ref == "security/all"  # from it is not to it
    nd = {"family": 6, "saddr": addresses.address("fe80::1"), "daddr": addresses.address("ff02::1:ff00:2")}
    assert evaluate(text, hook, l4proto="ipv6-icmp", icmp_type=135, dport=None, **nd).ref == "system/ipv6-nd"
    echo = evaluate(text, hook, l4proto="ipv6-icmp", icmp_type=128, dport=None, **nd)
    assert (echo.verdict, echo.ref) == ("drop", "default")


def test_pass_returns_to_the_next_tier() -> None:
    text = nftables.render(SCENARIOS["pass"].doc).text
    assert 'counter return comment "security/trusted-ssh"' in text
    assert evaluate(text, saddr=addresses.address("10.77.5.1"), dport=22).ref == "application/ssh"
    assert evaluate(text, saddr=addresses.address("10.77.6.1"), dport=22).ref == "security/no-ssh"


def test_log_prefix_and_comment_fit_kernel_limits() -> None:
    ref = "application/" + "r" * 200
    doc = document(ingress=(entry(ref, DENY, spec(TCP, 80)),))
    got = evaluate(nftables.render(doc).text)
    assert got.log_prefixes == (f"ms:d:{ref}"[: names.NFT_LOG_PREFIX_MAX],)
    assert got.ref is not None and len(got.ref) == names.NFT_COMMENT_MAX
    assert got.ref == nftables.rule_comment(ref) and nftables.counter_refs(doc)[got.ref] == ref


@pytest.mark.netns
def test_the_kernel_takes_the_longest_prefix_and_comment(nft_check: None) -> None:
    doc = document(ingress=(entry("application/" + "r" * 200, DENY, spec(TCP, 80)),))
    netns.nft_dry_run(nftables.render(doc).text)


def test_quotes_in_refs_cannot_escape_the_string() -> None:
    ref = 'application/x" accept comment "y'
    text = nftables.render(document(ingress=(entry(ref, DENY, spec(TCP, 80)),))).text
    got = evaluate(text)
    assert got.verdict == "drop" and got.ref == f"application/x_ accept comment _y {names.digest(ref)}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_rule_counts_and_its_comment_leads_back_to_its_rule(name: str) -> None:
    """What the agent's counter report relies on: each rule of a tier chain has a counter, and its
    comment maps to the ref of the entry it was rendered from."""
    sc = SCENARIOS[name]
    text = nftables.render(sc.doc, sc.settings, sc.cgroups, uids=sc.uids).text
    refs = nftables.counter_refs(sc.doc)
    program = nftverify.parse(text)
    tier_rules = [r for c in program.chains.values() if c.hook is None for r in c.rules]
    assert all(r.comment in refs for r in tier_rules), name
    entry_refs = {e.ref for e in (*sc.doc.ingress, *sc.doc.egress)}
    assert {refs[r.comment] for r in tier_rules if r.comment} <= entry_refs
    lines = text.splitlines()
    assert all(" counter " in lines[r.line - 1] or lines[r.line - 1].lstrip().startswith("counter ")
               for c in program.chains.values() for r in c.rules), name  # fmt: skip
    default = [r for c in program.chains.values() if c.hook for r in c.rules if r.comment == "default"]
    assert default and refs["default"] == "default"


def test_refs_that_do_not_fit_a_comment_still_get_distinct_comments() -> None:
    long_a, long_b = "application/" + "r" * 200 + "a", "application/" + "r" * 200 + "b"
    odd = "application/web app"
    entries = tuple(entry(ref, ALLOW, spec(TCP, 80 + i)) for i, ref in enumerate((long_a, long_b, odd)))
    doc = document(ingress=entries)
    refs = nftables.counter_refs(doc)
    assert {refs[nftables.rule_comment(r)] for r in (long_a, long_b, odd)} == {long_a, long_b, odd}
    assert nftables.rule_comment(odd) == odd  # a space is safe inside the quotes: unchanged
    program = nftverify.parse(nftables.render(doc).text)
    comments = {r.comment for c in program.chains.values() for r in c.rules}
    assert {nftables.rule_comment(long_a), nftables.rule_comment(long_b)} <= comments


def test_rate_limited_logging_never_changes_the_verdict() -> None:
    sc = SCENARIOS["rate-limited"]
    text = nftables.render(sc.doc, sc.settings).text
    assert 'limit rate 20/second counter log prefix "ms:d:default" group 7 drop' in text
    flood = evaluate(text, dport=9999, over_limit=True)
    assert (flood.verdict, flood.ref, flood.logged) == ("drop", "default", False)


def test_process_without_cgroup_is_enforced_at_port_level_with_a_warning() -> None:
    doc = document(ingress=(entry("application/db", ALLOW, spec(TCP, 3306), process="mysqld"),))
    result = nftables.render(doc)
    assert result.warnings == (
        "application/db (ingress): process mysqld not enforced: no cgroup known; enforced at port level",
    )
    assert "socket" not in result.text
    assert evaluate(result.text, dport=3306).ref == "application/db"


def test_process_with_cgroup_matches_the_socket_cgroup_at_its_level() -> None:
    doc = document(ingress=(entry("application/db", ALLOW, spec(TCP, 3306), process="mysqld"),))
    result = nftables.render(doc, cgroups={"mysqld": "/system.slice/mysql.service/"})
    assert result.warnings == ()
    assert 'socket cgroupv2 level 2 "system.slice/mysql.service"' in result.text
    assert evaluate(result.text, dport=3306, cgroup="system.slice/mysql.service").ref == "application/db"
    assert evaluate(result.text, dport=3306, cgroup="system.slice/other.service").ref == "default"
    assert evaluate(result.text, dport=3306).ref == "default"  # no socket: no match


def test_cgroup_paths_that_cannot_be_quoted_are_not_used() -> None:
    doc = document(ingress=(entry("application/db", ALLOW, spec(TCP, 3306), process="mysqld"),))
    result = nftables.render(doc, cgroups={"mysqld": 'a/../b"'})
    assert "socket" not in result.text and "not a plain relative path" in result.warnings[0]


def test_users_are_matched_on_egress_only() -> None:
    doc = document(
        ingress=(entry("application/in", ALLOW, spec(TCP, 80), user="www"),),
        egress=(entry("application/out", ALLOW, spec(TCP, 443), user="www"),),
    )
    result = nftables.render(doc, uids={"www": 33})
    assert "meta skuid 33" in result.text
    assert result.warnings == (
        "application/in (ingress): user www not enforced: the owner of the receiving socket of a new "
        "connection is not visible; enforced at port level",
    )
    out = {"saddr": addresses.address("10.77.250.2"), "daddr": addresses.address("10.77.1.1"), "dport": 443}
    assert evaluate(result.text, "output", uid=33, **out).ref == "application/out"
    assert evaluate(result.text, "output", uid=0, **out).ref == "default"


def test_icmp_without_sets_is_split_by_family() -> None:
    doc = document(ingress=(entry("application/ping", ALLOW, spec(ICMP)),))
    text = nftables.render(doc).text
    assert "meta nfproto ipv4 meta l4proto icmp counter accept" in text
    assert "meta nfproto ipv6 meta l4proto ipv6-icmp counter accept" in text
    src, dst = addresses.address("fd00::1"), addresses.address("fd00::2")
    echo = evaluate(text, family=6, saddr=src, daddr=dst, l4proto="ipv6-icmp", dport=None, icmp_type=128)
    assert echo.ref == "application/ping"
    v4_icmp_in_v6 = evaluate(text, family=6, saddr=src, daddr=dst, l4proto="icmp", dport=None)
    assert v4_icmp_in_v6.ref == "default"  # icmp inside IPv6 is not ICMPv6


def test_repeated_tiers_render_one_chain() -> None:
    doc = replace(document(ingress=(entry("security/x", PASS, spec(TCP)),)), tiers=("security", "security"))
    program = nftverify.parse(nftables.render(doc).text)
    assert [c for c in program.chains if c.startswith("in_")] == ["in_security"]
