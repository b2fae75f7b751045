"""For random estates and clusters, the exported NetworkPolicies, analysed by the section-1
analyzer, give the engine's verdict for every ordered pod pair and every port edge."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from microseg import errors
from microseg.k8s import cluster, export_base
from microseg.model.estate import Estate
from tests.k8s import estates, proof

OPTIONS = export_base.Options()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(estates.estates(), estates.clusters())
def test_label_policies_export_exactly(est: Estate, found: cluster.Cluster) -> None:
    assert proof.disagreements(est, found, OPTIONS) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(estates.estates(with_lists=True), estates.clusters())
def test_policies_with_addresses_export_exactly_or_refuse(est: Estate, found: cluster.Cluster) -> None:
    try:
        wrong = proof.disagreements(est, found, OPTIONS)
    except errors.InexpressibleError as exc:
        assert exc.rules, "a refusal names the rules involved"
        return
    assert wrong == []


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(estates.estates(), estates.clusters())
def test_label_policies_export_exactly_without_dns(est: Estate, found: cluster.Cluster) -> None:
    """--no-dns takes away only the deliberate addition; what is left is the engine's verdict too."""
    assert proof.disagreements(est, found, export_base.Options(dns=False)) == []
