"""Verdicts: the JSON shape and whether a flow gets through for each outcome."""

from __future__ import annotations

import pytest

from microseg.model import addresses, verdicts, workloads

Dec, Out = verdicts.Decision, verdicts.Outcome


@pytest.mark.parametrize(
    ("decision", "outcome", "allowed"),
    [
        (Dec.ALLOW, Out.ALLOWED, True),
        (Dec.DENY, Out.WOULD_BLOCK, True),
        (Dec.DENY, Out.ALLOWED, True),
        (Dec.DENY, Out.BLOCKED, False),
    ],
    ids=["allowed", "alert-mode-would-block", "visibility-mode-deny", "enforced-deny"],
)
def test_allowed_per_outcome(decision: verdicts.Decision, outcome: verdicts.Outcome, allowed: bool) -> None:
    assert verdicts.Verdict(decision, outcome, "application", "application/web", "why").allowed is allowed


def test_to_dict_shape_with_everything() -> None:
    verdict = verdicts.Verdict(
        decision=Dec.ALLOW,
        outcome=Out.ALLOWED,
        tier="application",
        rule="application/web",
        reason="rule application/web allows tcp/443",
        source_labels_matched=("app=lb",),
        destination_labels_matched=("app=web", "env=prod"),
        source_mode=workloads.Mode.ALERT,
        destination_mode=workloads.Mode.ENFORCE,
        notes=("process constraint not checked",),
    )
    assert verdict.to_dict() == {
        "decision": "allow",
        "outcome": "allowed",
        "tier": "application",
        "rule": "application/web",
        "reason": "rule application/web allows tcp/443",
        "sourceLabelsMatched": ["app=lb"],
        "destinationLabelsMatched": ["app=web", "env=prod"],
        "sourceMode": "alert",
        "destinationMode": "enforce",
        "notes": ["process constraint not checked"],
    }


def test_to_dict_of_a_default_deny() -> None:
    verdict = verdicts.Verdict(Dec.DENY, Out.BLOCKED, None, None, "no rule matched in security, application")
    data = verdict.to_dict()
    assert data["tier"] is None and data["rule"] is None
    assert data["sourceMode"] is None and data["destinationMode"] is None
    assert data["sourceLabelsMatched"] == [] and data["notes"] == []
    assert (data["decision"], data["outcome"]) == ("deny", "blocked")


def test_outcome_values() -> None:
    assert [o.value for o in Out] == ["allowed", "would-block", "blocked"]


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (verdicts.Endpoint(addresses.address("10.0.0.1"), "web-1"), "web-1 (10.0.0.1)"),
        (verdicts.Endpoint(addresses.address("2001:db8::1")), "2001:db8::1"),
    ],
    ids=["with-workload", "address-only"],
)
def test_endpoint_str(endpoint: verdicts.Endpoint, text: str) -> None:
    assert str(endpoint) == text
