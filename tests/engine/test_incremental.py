"""Incremental compilation equals a full recompute, whatever the order or batching of changes.

As Calico's Felix tests do, the same final state is reached by different paths (one change at a
time, everything at once, reversed) and every output must be identical: documents, set members and
verdicts.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import engine
from microseg.model import addresses, estate, labels, services, workloads
from tests.engine.estates import HTTP, TCP, UDP, estates, label_sets, rule, sel, wl

PROBES = ((80, TCP), (3306, TCP), (22, TCP), (53, UDP), (8000, TCP))


def snapshot(eng: engine.PolicyEngine) -> dict[str, object]:
    """Everything observable about an engine's output."""
    names = eng.workload_names()
    verdicts = {
        (a, b, port, proto.value): eng.evaluate(eng.endpoint(a), eng.endpoint(b), port, proto)
        for a in names
        for b in names
        for port, proto in PROBES
    }
    docs = {n: d.to_dict() for n, d in eng.documents().items()}
    return {"documents": docs, "verdicts": verdicts}


@settings(max_examples=60, deadline=None)
@given(estates(), st.randoms(use_true_random=False))
def test_workload_order_does_not_change_output(est: estate.Estate, rnd: object) -> None:
    shuffled = list(est.workloads)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    forward = engine.PolicyEngine(est)
    backward = engine.PolicyEngine(est.with_workloads(tuple(reversed(est.workloads))))
    random_order = engine.PolicyEngine(est.with_workloads(tuple(shuffled)))
    assert snapshot(forward) == snapshot(backward) == snapshot(random_order)


@st.composite
def change_sequences(draw: st.DrawFn) -> tuple[estate.Estate, list[tuple[str, workloads.Workload | str]]]:
    """A random estate and a random sequence of upserts (new, relabel, readdress, mode) and removes."""
    est = draw(estates())
    current = {w.name: w for w in est.workloads}
    used = {int(w.addresses[0].network_address) & 0xFF for w in est.workloads}
    ops: list[tuple[str, workloads.Workload | str]] = []
    for step in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(("new", "relabel", "readdress", "mode", "remove", "quarantine")))
        if kind == "new" or not current:
            free = sorted(set(range(1, 255)) - used)
            host = draw(st.sampled_from(free))
            used.add(host)
            new = workloads.Workload(f"n{step}", addresses=(addresses.network(f"10.77.0.{host}"),),
                                     labels=labels.Labels(draw(label_sets)))  # fmt: skip
            current[new.name] = new
            ops.append(("upsert", new))
            continue
        name = draw(st.sampled_from(sorted(current)))
        old = current[name]
        if kind == "remove":
            del current[name]
            used.discard(int(old.addresses[0].network_address) & 0xFF)
            ops.append(("remove", name))
            continue
        if kind == "relabel":
            changed = old.with_labels(labels.Labels(draw(label_sets)))
        elif kind == "quarantine":
            changed = old.with_labels(old.labels.merged({"quarantine": "true"}))
        elif kind == "mode":
            changed = dataclasses.replace(old, mode=draw(st.sampled_from(list(workloads.Mode))))
        else:
            free = sorted(set(range(1, 255)) - used)
            host = draw(st.sampled_from(free))
            used.add(host)
            used.discard(int(old.addresses[0].network_address) & 0xFF)
            changed = old.with_addresses((addresses.network(f"10.77.0.{host}"),))
        current[name] = changed
        ops.append(("upsert", changed))
    return est, ops


def final_workloads(
    est: estate.Estate, ops: list[tuple[str, workloads.Workload | str]]
) -> tuple[workloads.Workload, ...]:
    current = {w.name: w for w in est.workloads}
    for op, arg in ops:
        if op == "remove":
            del current[arg]  # type: ignore[arg-type]
        else:
            current[arg.name] = arg  # type: ignore[union-attr]
    return tuple(current.values())


@settings(max_examples=120, deadline=None)
@given(change_sequences())
def test_incremental_equals_full_recompute(case: tuple[estate.Estate, list[tuple[str, object]]]) -> None:
    est, ops = case
    incremental = engine.PolicyEngine(est)
    snapshot(incremental)  # warm every cache first: stale caches must not survive changes
    for op, arg in ops:
        if op == "remove":
            incremental.remove_workload(arg)  # type: ignore[arg-type]
        else:
            incremental.upsert_workload(arg)  # type: ignore[arg-type]
    full = engine.PolicyEngine(est.with_workloads(final_workloads(est, ops)))  # type: ignore[arg-type]
    assert snapshot(incremental) == snapshot(full)


@settings(max_examples=80, deadline=None)
@given(change_sequences())
def test_deltas_replay_set_members(case: tuple[estate.Estate, list[tuple[str, object]]]) -> None:
    """An agent holding old members plus the deltas ends with exactly the new members."""
    est, ops = case
    eng = engine.PolicyEngine(est)
    names = eng.sets.selector_set_names()
    held = {n: set(eng.sets.members(n)) for n in names}
    for op, arg in ops:
        delta = eng.remove_workload(arg) if op == "remove" else eng.upsert_workload(arg)  # type: ignore[arg-type]
        for set_name, change in delta.sets.items():
            assert not (change.added & change.removed)
            held[set_name] = (held[set_name] - change.removed) | change.added
        assert held == {n: set(eng.sets.members(n)) for n in names}


def test_address_change_recomputes_no_ruleset() -> None:
    from tests.engine.estates import crm_estate

    eng = engine.PolicyEngine(crm_estate())
    before = dict(eng.rulesets)
    web = eng.workload("web-1")
    delta = eng.upsert_workload(web.with_addresses((addresses.network("10.77.1.99"),)))
    assert delta.new_identities == 0
    assert eng.rulesets == before
    assert delta.sets and all(addresses.network("10.77.1.99") in d.added for d in delta.sets.values())
    assert "db-1" in delta.workloads  # db-1's ingress set holds web addresses
    assert eng.evaluate(eng.endpoint("web-1"), eng.endpoint("db-1"), 3306, services.Protocol.TCP).allowed


def test_relabel_to_known_identity_compiles_nothing() -> None:
    from tests.engine.estates import crm_estate

    eng = engine.PolicyEngine(crm_estate())
    web = eng.workload("web-2")
    delta = eng.upsert_workload(web.with_labels(eng.workload("web-1").labels))
    assert delta.new_identities == 0
    delta = eng.upsert_workload(web.with_labels(labels.Labels({"role": "brand-new"})))
    assert delta.new_identities == 1


def test_identities_matching_the_same_selectors_share_one_compile_until_the_last_goes() -> None:
    web_rule = rule("to-web", "application", 1, "allow", (sel("env=prod"),), (sel("app=web"),), (HTTP,))
    dev, test = (
        wl("web-dev", "10.77.6.1", app="web", env="dev"),
        wl("web-test", "10.77.6.2", app="web", env="test"),
    )
    eng = engine.PolicyEngine(estate.Estate(workloads=(dev, test), rules=(web_rule,)))
    first, second = eng.identity("web-dev"), eng.identity("web-test")
    assert first != second  # env is relevant (a selector names it) ...
    assert eng.rulesets[first] is eng.rulesets[second]  # ... but both match only app=web
    eng.remove_workload("web-dev")
    assert len(eng.compiler._compiled) == 1  # still held by web-test's identity
    eng.remove_workload("web-test")
    assert eng.compiler._compiled == {}  # nothing kept for identities no workload carries
