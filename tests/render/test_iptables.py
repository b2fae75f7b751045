"""The iptables + ipset fallback: names within kernel limits, restore forms, and the differences
from nftables that are reported rather than hidden. Connection behaviour is proven in the netns tests."""

from __future__ import annotations

from microseg import settings as config
from microseg.render import iptables, names
from tests.render.documents import ALLOW, DENY, SCENARIOS, TCP, aset, document, entry, spec


def rules_of(text: str) -> list[str]:
    """The `-A` lines."""
    return [line for line in text.splitlines() if line.startswith("-A ")]


def test_chain_names_fit_28_characters_and_stay_unique() -> None:
    result = iptables.render(SCENARIOS["long-names"].doc)
    chains = [line[1:].split()[0] for line in result.v4.splitlines() if line.startswith(":")]
    assert all(len(c) <= names.IPT_CHAIN_MAX for c in chains)
    assert len(set(chains)) == len(chains)
    assert "MS-IN-a-tier-name-of-8056f8" in chains and "MS-OUT-a-tier-name-of-8056f8" in chains


def test_ipset_names_fit_with_their_swap_twin() -> None:
    result = iptables.render(SCENARIOS["long-names"].doc)
    created = [line.split()[1] for line in result.ipset.splitlines() if line.startswith("create ")]
    assert created and all(len(n) <= names.IPSET_NAME_MAX for n in created)


def test_sets_are_swapped_in_atomically() -> None:
    doc = document(sets=(aset("clients", "10.77.1.0/24"),))
    lines = iptables.render(doc).ipset.splitlines()
    start = lines.index("create ms4-clients hash:net family inet maxelem 1048576 -exist")
    assert lines[start : start + 6] == [
        "create ms4-clients hash:net family inet maxelem 1048576 -exist",
        "create ms4-clients-t hash:net family inet maxelem 1048576 -exist",
        "flush ms4-clients-t",
        "add ms4-clients-t 10.77.1.0/24",
        "swap ms4-clients-t ms4-clients",
        "destroy ms4-clients-t",
    ]


def test_whole_address_space_is_split_for_hash_net() -> None:
    text = iptables.render(SCENARIOS["any-protocol"].doc).ipset
    assert "add ms4-internet-t 0.0.0.0/1\nadd ms4-internet-t 128.0.0.0/1\n" in text
    assert "add ms6-internet-t ::/1\nadd ms6-internet-t 8000::/1\n" in text


def test_first_install_inserts_jumps_and_reapply_moves_them() -> None:
    result = iptables.render(SCENARIOS["enforce"].doc)
    jump = "-m comment --comment microseg -j MS-INPUT"
    assert f"-D INPUT {jump}\n-I INPUT 1 {jump}\n" in result.v4
    assert f"-D INPUT {jump}" not in result.v4_install and f"-I INPUT 1 {jump}" in result.v4_install
    assert (
        result.v4.replace(f"-D INPUT {jump}\n", "").replace(
            "-D OUTPUT -m comment --comment microseg -j MS-OUTPUT\n", ""
        )
        == result.v4_install
    )


def test_families_are_kept_apart() -> None:
    result = iptables.render(SCENARIOS["ipv6"].doc)
    assert "ms6-" not in result.v4 and "ms4-" not in result.v6
    assert "icmpv6-type" not in result.v4 and "--icmpv6-type 135" in result.v6
    assert "src -p icmp -m comment" in result.v4 and "src -p ipv6-icmp -m comment" in result.v6


def test_deny_logs_then_drops_and_alert_logs_then_accepts() -> None:
    enforce = rules_of(iptables.render(SCENARIOS["enforce"].doc).v4)
    alert = rules_of(iptables.render(SCENARIOS["alert"].doc).v4)
    head = '-A MS-IN-security -m set --match-set ms4-dev src -m comment --comment "security/no-dev"'
    log = "-j NFLOG --nflog-group 7 --nflog-prefix"
    assert [f'{head} {log} "ms:d:security/no-dev"', f"{head} -j DROP"] == [
        r for r in enforce if r.startswith(head)
    ]
    assert [f'{head} {log} "ms:w:security/no-dev"', f"{head} -j ACCEPT"] == [
        r for r in alert if r.startswith(head)
    ]


def test_rate_limit_guards_only_the_log() -> None:
    sc = SCENARIOS["rate-limited"]
    lines = rules_of(iptables.render(sc.doc, sc.settings).v4)
    assert '-A MS-INPUT -m comment --comment "default" -m limit --limit 20/second -j NFLOG' in "\n".join(
        lines
    )
    assert '-A MS-INPUT -m comment --comment "default" -j DROP' in lines


def test_nflog_prefix_is_cut_at_63() -> None:
    doc = document(ingress=(entry("application/" + "r" * 100, DENY, spec(TCP, 80)),))
    prefixes = [
        line.split('--nflog-prefix "')[1].rstrip('"')
        for line in rules_of(iptables.render(doc).v4)
        if "--nflog-prefix" in line
    ]
    assert prefixes and all(len(p) <= names.IPT_LOG_PREFIX_MAX for p in prefixes)


def test_multiport_takes_at_most_15_slots_per_rule() -> None:
    lines = [r for r in rules_of(iptables.render(SCENARIOS["long-names"].doc).v4) if "multiport" in r]
    assert (
        len(lines) == 2
        and "--dports 1000,1001," in lines[0]
        and "--dports 1015,1016,1017,1018,1019 " in lines[1]
    )


def test_time_window_end_is_inclusive_in_xt_time() -> None:
    lines = rules_of(iptables.render(SCENARIOS["time-window"].doc).v4)
    assert any("--datestart 2026-01-01T00:00:00 --datestop 2026-01-01T23:59:59 --utc" in r for r in lines)
    assert any("--datestop 2025-12-31T23:59:59 --utc" in r for r in lines)


def test_windows_past_2038_are_reported() -> None:
    doc = document(
        ingress=(
            entry("application/late", ALLOW, spec(TCP, 80), not_before=2**31 + 10),
            entry("application/long", ALLOW, spec(TCP, 81), not_after=2**31 + 10),
        )
    )
    result = iptables.render(doc)
    assert "application/late" not in result.v4
    assert "--datestop 2038-01-19T03:14:07 --utc" in result.v4
    assert result.warnings == (
        "application/late: time window starts after 2038; iptables cannot express it, rule left out",
        "application/long: time window ends after 2038; iptables ends it in 2038",
    )


def test_process_is_enforced_on_egress_only() -> None:
    sc = SCENARIOS["process-cgroup"]
    result = iptables.render(sc.doc, sc.settings, sc.cgroups, uids=sc.uids)
    replica = [r for r in rules_of(result.v4) if "application/replica" in r]
    assert replica and all(
        '-m cgroup --path "system.slice/mysql.service" -m owner --uid-owner 106' in r for r in replica
    )
    assert not any("cgroup" in r for r in rules_of(result.v4) if "application/db" in r)
    assert (
        "process mysqld not enforced: this data plane cannot see the receiving socket" in result.warnings[0]
    )


def test_prefix_setting_names_sets_and_chains() -> None:
    doc = document(sets=(aset("clients", "10.77.1.0/24"),))
    result = iptables.render(doc, config.RenderSettings(ipset_prefix="lab"))
    assert ":LAB-INPUT - [0:0]" in result.v4 and "create lab4-clients " in result.ipset
