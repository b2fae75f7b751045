"""The engine and the documents it compiles say the same thing about every flow.

For random estates, every ordered pair of endpoints (workloads and outside addresses) and several
ports: the engine's verdict must equal what the source's egress list and the destination's ingress
list decide (`microseg.render.semantics.decide`, the spec the renderers are checked against), once
both ends' modes are applied. Together with the renderer's own property test (rendered nftables ==
`decide`), this ties the kernel's behaviour to the one evaluator.
"""

from __future__ import annotations

from hypothesis import given, settings

from microseg.engine import engine
from microseg.model import addresses, estate, labelrules, labels, rules, verdicts, workloads
from microseg.render import semantics
from tests.engine.estates import REFERENCE_TIME, TCP, UDP, estates

PROBES = ((80, TCP), (3306, TCP), (22, TCP), (53, UDP), (8000, TCP), (8440, TCP))
OUTSIDERS = ("10.77.0.77", "10.77.0.200", "10.77.3.3")


def document_outcome(
    eng: engine.PolicyEngine, src: verdicts.Endpoint, dst: verdicts.Endpoint, port: int, proto: object
) -> tuple[str, set[str]]:
    """Outcome on the wire and the deciding refs, from the two ends' documents alone."""
    at = REFERENCE_TIME.timestamp()
    wire: list[tuple[str, bool]] = []
    refs: set[str] = set()
    for end, direction, peer, local in ((src, "egress", dst, src), (dst, "ingress", src, dst)):
        if end.workload is None or not eng.workload(end.workload).managed:
            continue
        doc = eng.document(end.workload)
        action, ref = semantics.decide(doc, direction, peer.address, local.address, proto, port, at)  # type: ignore[arg-type]
        refs.add(ref)
        wire.append(semantics.outcome(doc.mode, action))
    if any(v == "drop" for v, _ in wire):
        return "blocked", refs
    return ("would-block" if any(logged for _, logged in wire) else "allowed"), refs


def expected_refs(verdict: verdicts.Verdict) -> set[str]:
    return {verdict.rule or semantics.DEFAULT_REF}


@settings(max_examples=150, deadline=None)
@given(estates())
def test_engine_verdicts_equal_document_semantics(est: estate.Estate) -> None:
    eng = engine.PolicyEngine(est)
    ends = [eng.endpoint(n) for n in eng.workload_names()] + [eng.endpoint(a) for a in OUTSIDERS]
    for src in ends:
        for dst in ends:
            if src == dst:
                continue
            for port, proto in PROBES:
                verdict = eng.evaluate(src, dst, port, proto, at=REFERENCE_TIME)
                outcome, refs = document_outcome(eng, src, dst, port, proto)
                assert outcome == verdict.outcome.value, (src, dst, port, verdict.reason, refs)
                if refs:
                    assert refs <= expected_refs(verdict) | {semantics.CONTROL_PLANE_REF}, (
                        verdict.reason,
                        refs,
                    )


def test_documents_of_a_quarantined_workload_enforce() -> None:
    w = workloads.Workload("q", addresses=(addresses.network("10.77.0.9"),), mode=workloads.Mode.ALERT,
                           labels=workloads.Labels({"quarantine": "true"}))  # fmt: skip
    eng = engine.PolicyEngine(estate.Estate(workloads=(w,)))
    doc = eng.document("q")
    assert doc.mode is workloads.Mode.ENFORCE
    action, ref = semantics.decide(doc, "ingress", addresses.address("10.77.0.1"),
                                   addresses.address("10.77.0.9"), TCP, 22, 0)  # fmt: skip
    assert (action, ref) == (rules.Action.DENY, "quarantine/isolate-in")


def test_documents_of_a_workload_quarantined_by_a_label_rule_enforce() -> None:
    """policy-file.md: a workload labelled `quarantine=true` is enforced whatever its mode, and a
    label rule's labels are labels: the document and the verdict both enforce."""
    w = workloads.Workload(
        "bad-1", addresses=(addresses.network("10.77.0.9"),), mode=workloads.Mode.VISIBILITY
    )
    rule = labelrules.LabelRule("compromised", labels.Labels({"quarantine": "true"}), hostname_glob="bad-*")
    eng = engine.PolicyEngine(estate.Estate(workloads=(w,), label_rules=(rule,)))
    doc = eng.document("bad-1")
    assert doc.mode is workloads.Mode.ENFORCE
    verdict = eng.evaluate(eng.endpoint("10.77.0.1"), eng.endpoint("bad-1"), 22, TCP, at=REFERENCE_TIME)
    assert (verdict.rule, verdict.outcome.value, verdict.destination_mode) == (
        "quarantine/isolate-in",
        "blocked",
        workloads.Mode.ENFORCE,
    )
