"""NetworkPolicy export means what the policy says: for the example estate with its Kubernetes
inventory, every pod pair on every port edge gets the engine's verdict from the exported policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.k8s import export, export_base, manifests
from tests.k8s import proof

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples"


@pytest.fixture(scope="module")
def example_estate():
    return policyfile.load([EXAMPLES / "estate"])


@pytest.fixture(scope="module")
def example_cluster():
    return manifests.load([EXAMPLES / "k8s"])


def test_examples_export_exactly(example_estate, example_cluster) -> None:
    options = export_base.Options(port_level=True, skip_icmp=True)
    assert proof.disagreements(example_estate, example_cluster, options) == []


def test_examples_without_flags_refuse_naming_the_rule(example_estate, example_cluster) -> None:
    with pytest.raises(errors.InexpressibleError, match=r"rule application/\S+: service \S+ names a process"):
        export.export(example_estate, example_cluster, export.Format.NETWORKPOLICY)
    with pytest.raises(
        errors.InexpressibleError,
        match="rule application/prometheus-scrapes-everything reaches pods with ICMP",
    ):
        export.export(
            example_estate, example_cluster, export.Format.NETWORKPOLICY, export_base.Options(port_level=True)
        )


def test_examples_warn_about_everything_they_accept(example_estate, example_cluster) -> None:
    result = export.export(
        example_estate,
        example_cluster,
        export.Format.NETWORKPOLICY,
        export_base.Options(port_level=True, skip_icmp=True),
    )
    assert (
        "rule application/prod-app-to-db: process/user of mysql not enforced (port level only)"
        in result.warnings
    )
    assert (
        "rule application/prometheus-scrapes-everything: ICMP left out for pods (--skip-icmp)"
        in result.warnings
    )
