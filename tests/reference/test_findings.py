"""Where the engine and the documents disagreed: one minimal example each, found by the reference
evaluator, and now what pins the fix.

Each test states what `docs/concepts.md` (or `docs/policy-file.md`) says. A new finding goes here
marked `xfail(strict=True)` (and, when the random agreement test in test_engine_agrees.py hits it,
with a carve-out there) until the engine or the documents change so that they agree; whoever
fixes it removes the mark and the carve-out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microseg import errors, policyfile
from microseg.engine import engine
from microseg.model import (
    addresses,
    estate,
    iplists,
    labelrules,
    labels,
    verdicts,
)
from tests.engine.estates import TCP, wl
from tests.reference import evaluator

AT = datetime(2026, 6, 1, tzinfo=UTC)
FORENSICS = iplists.IpList("forensics", (addresses.network("10.77.250.0/24"),))


def verdict(est: estate.Estate, source: str, destination: str) -> verdicts.Verdict:
    eng = engine.PolicyEngine(est)
    return eng.evaluate(eng.endpoint(source), eng.endpoint(destination), 22, TCP, at=AT)


def reference(est: estate.Estate, source: str, destination: str) -> evaluator.Answer:
    first = {w.name: w.addresses[0].network_address for w in est.workloads}
    return evaluator.evaluate(est, evaluator.Flow(first[source], first[destination], 22, TCP, AT))


def quarantined_in_the_forensics_list() -> estate.Estate:
    return estate.Estate(
        workloads=(
            wl("jump", "10.77.250.5", quarantine="full"),
            wl("analyst", "10.77.250.6", quarantine="true"),
            wl("suspect", "10.77.0.7", quarantine="true"),
        ),
        ip_lists=(FORENSICS,),
        quarantine_allow="forensics",
    )


def quarantined_by_a_label_rule() -> estate.Estate:
    compromised = labelrules.LabelRule(
        "compromised", labels.Labels({"quarantine": "true"}), hostname_glob="bad-*"
    )
    return estate.Estate(
        workloads=(wl("bad-1", "10.77.0.5", "visibility"), wl("x", "10.77.0.6", "visibility")),
        label_rules=(compromised,),
    )


ISOLATED = evaluator.Answer(
    verdicts.Decision.DENY, verdicts.Outcome.BLOCKED, "quarantine", "quarantine/isolate-in"
)
PAIRS = [("jump", "suspect"), ("suspect", "jump"), ("suspect", "analyst")]
PAIR_IDS = ["full-in-list-to-forensics", "forensics-to-full-in-list", "forensics-to-forensics-in-list"]


@pytest.mark.parametrize(("source", "destination"), PAIRS, ids=PAIR_IDS)
def test_the_reference_isolates_what_the_documents_isolate(source: str, destination: str) -> None:
    """The examples below, as the reference reads the documents (so each xfail fails for its reason)."""
    assert reference(quarantined_in_the_forensics_list(), source, destination) == ISOLATED


def test_the_reference_enforces_a_quarantine_from_a_label_rule() -> None:
    assert reference(quarantined_by_a_label_rule(), "x", "bad-1") == ISOLATED


@pytest.mark.parametrize(("source", "destination"), PAIRS, ids=PAIR_IDS)
def test_a_quarantined_end_keeps_only_what_its_own_level_keeps(source: str, destination: str) -> None:
    """concepts.md: quarantine keeps "only the control plane (`full`) or also a forensics IP list
    (`forensics`)". `jump` sits in the forensics network and is quarantined `full`; `analyst` sits
    there too, quarantined `forensics`; `suspect` is quarantined `forensics` outside the list. Each
    of these flows leaves one end's quarantine for an address it does not keep (jump: nothing;
    analyst: suspect is not in the list), yet the engine allows them by allow-forensics-in/out."""
    assert verdict(quarantined_in_the_forensics_list(), source, destination).outcome.value == "blocked"


def test_a_quarantine_label_from_a_label_rule_enforces() -> None:
    """policy-file.md: "A workload labelled `quarantine=true` is enforced whatever its mode", and
    label rules add labels. The engine isolates `bad-1` (quarantine/isolate-in decides) but keeps
    its visibility mode, in the verdict and in its ruleset document: nothing is blocked."""
    found = verdict(quarantined_by_a_label_rule(), "x", "bad-1")
    assert (found.rule, found.outcome.value) == ("quarantine/isolate-in", "blocked")


PLATFORM_FIRST = """\
apiVersion: microseg.io/v1
kind: Tier
metadata: {name: platform}
spec: {order: 50}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: platform}
spec:
  tier: platform
  rules:
    - {name: everything, priority: 1, action: allow, from: any, to: any, services: any}
"""


def test_a_tier_ordered_before_quarantine_is_refused() -> None:
    """concepts.md: quarantine "isolates a workload in the first tier"; policy-file.md let anyone
    declare a tier with any unused order, and an allow-everything rule in `platform` at order 50
    then reached the quarantined workload. The loader (and so the server's draft) refuses such a
    tier instead; the reference's generator keeps quarantine first as well."""
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load_text(PLATFORM_FIRST, "platform.yaml")
    [found] = caught.value.problems
    assert (found.file, found.line, found.field) == ("platform.yaml", 4, "spec.order")
    assert "quarantine is always evaluated first" in found.message
