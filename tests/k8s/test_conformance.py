"""The analyzer agrees with np-guard's and Antrea's own test suites on every expected verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli.main import app
from microseg.k8s import manifests, reachability
from microseg.model import services
from tests.k8s import cases

CASES = cases.cases()


def test_the_conformance_data_is_there() -> None:
    assert len(CASES) == 55, f"expected the 55 upstream cases in {cases.CONFORMANCE}"


def test_the_vendored_copy_is_the_shared_data_unchanged() -> None:
    if not cases.SHARED.is_dir():
        pytest.skip(f"no shared folder beside the checkout ({cases.SHARED}); the vendored copy is used")
    shared = {p.name: p.read_bytes() for p in cases.SHARED.iterdir()}
    vendored = {p.name: p.read_bytes() for p in cases.VENDORED.iterdir()}
    assert vendored == shared, (
        "tests/k8s/conformance/netpol must be an exact copy of shared/conformance/netpol"
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: cases.Case, tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(case.manifests())
    probes = [reachability.Probe(port, services.Protocol(proto.lower())) for port, proto in case.probes()]
    result = reachability.Reachability(manifests.load([tmp_path]), probes)
    index = {pod.ref: i for i, pod in enumerate(result.pods)}
    wrong = []
    for e in case.expect:
        probe = reachability.Probe(e["port"], services.Protocol(e["protocol"].lower()))
        got = result.allowed(index[e["from"]], index[e["to"]], probe)
        if got != e["allowed"]:
            wrong.append(
                f"{e['from']} -> {e['to']} {probe}: expected {e['allowed']}, got {got}: "
                f"{result.reason(index[e['from']], index[e['to']], probe)}"
            )
    assert not wrong, "\n".join(wrong)
    if case.complete:
        total, _ = result.count()
        assert total == len(case.expect), "the case lists every pair; so must the analyzer"


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in ("npguard-onlineboutique", "antrea-e2e-different-named-ports")],
    ids=lambda c: c.id,
)
def test_json_output_matches_the_case(case: cases.Case, tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(case.manifests())
    args = ["k8s", "reachability", "-f", str(tmp_path), "-o", "json"]
    for port, proto in case.probes():
        args += ["--port", f"{port}/{proto}"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    got = {(c["from"], c["to"], c["port"], c["protocol"]): c for c in json.loads(run.stdout)["connections"]}
    for e in case.expect:
        c = got[(e["from"], e["to"], e["port"], e["protocol"])]
        assert c["allowed"] == e["allowed"], c
        assert set(c) == {"from", "to", "port", "protocol", "allowed", "reason"}
        assert c["reason"]
