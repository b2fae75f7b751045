"""Matrix and semantic diff: class-based results equal a brute force over every workload pair."""

from __future__ import annotations

from hypothesis import given, settings

from microseg.engine import engine, reachability
from microseg.model import estate, services
from tests.engine.estates import TCP, crm_estate, estates, rule, sel

PROBES: list[reachability.Probe] = [(TCP, 80), (TCP, 3306), (TCP, 22), (services.Protocol.UDP, 53)]


def brute_matrix(eng: engine.PolicyEngine, keys: tuple[str, ...]) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = {}
    for a in eng.workload_names():
        for b in eng.workload_names():
            if a == b:
                continue
            cell = out.setdefault(
                (reachability.group_of(eng, a, keys), reachability.group_of(eng, b, keys)), {}
            )
            cell["pairs"] = cell.get("pairs", 0) + 1
            for proto, port in PROBES:
                if eng.evaluate(eng.endpoint(a), eng.endpoint(b), port, proto).decision.value == "allow":
                    probe = reachability.probe_text((proto, port))
                    cell[probe] = cell.get(probe, 0) + 1
    return out


@settings(max_examples=60, deadline=None)
@given(estates())
def test_matrix_equals_brute_force(est: estate.Estate) -> None:
    eng = engine.PolicyEngine(est)
    keys = ("env", "role")
    cells = reachability.matrix(eng, keys, PROBES)
    assert {k: {"pairs": c.pairs, **c.allowed} for k, c in cells.items()} == brute_matrix(eng, keys)


@settings(max_examples=60, deadline=None)
@given(estates(), estates())
def test_semantic_diff_equals_brute_force(a: estate.Estate, b: estate.Estate) -> None:
    old = engine.PolicyEngine(a)
    new = engine.PolicyEngine(b.with_workloads(a.workloads))
    found = {(c.source, c.destination, c.probe) for c in reachability.semantic_diff(old, new, PROBES)}
    expected = set()
    for x in old.workload_names():
        for y in old.workload_names():
            for proto, port in PROBES:
                before = old.evaluate(old.endpoint(x), old.endpoint(y), port, proto)
                after = new.evaluate(new.endpoint(x), new.endpoint(y), port, proto)
                if x != y and (before.outcome, before.decision) != (after.outcome, after.decision):
                    expected.add((x, y, reachability.probe_text((proto, port))))
    assert found == expected


def test_diff_names_gained_and_lost_flows() -> None:
    base = crm_estate()
    opened = base.with_rules((*base.rules, rule("db-ssh", "application", 999, "allow", (sel("role=web"),),
                                                 (sel("role=db"),), (services.Service("ssh", (services.PortSpec(TCP, (services.PortRange(22, 22),)),)),))))  # fmt: skip
    changes = reachability.semantic_diff(engine.PolicyEngine(base), engine.PolicyEngine(opened), [(TCP, 22)])
    pairs = {(c.source, c.destination) for c in changes}
    assert ("web-1", "db-1") in pairs
    assert all(c.gained and c.after.rule == "application/db-ssh" for c in changes)
    assert ("dev-web", "db-1") not in pairs  # the security tier still denies dev -> prod


def test_probes_come_from_rules() -> None:
    probes = reachability.probes_of(engine.PolicyEngine(crm_estate()))
    assert (TCP, 3306) in probes and (TCP, 22) in probes and (services.Protocol.UDP, 53) in probes
    assert reachability.parse_probe("53/udp") == (services.Protocol.UDP, 53)
    assert reachability.parse_probe("443") == (TCP, 443)
