"""A workload known by a CIDR (an unmanaged network) is shown as its CIDR, not as the one address
a verdict is evaluated at (which read `corp (192.168.0.0)`: a network address, not the network)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from microseg import policyfile
from microseg.cli.main import app
from microseg.engine import engine
from microseg.model import addresses, verdicts

ESTATE = """\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web, labels: {role: web}}
spec: {addresses: [10.0.0.1]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: corp, labels: {role: corp}}
spec: {kind: unmanaged, addresses: [192.168.0.0/16]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: p}
spec:
  tier: application
  rules: [{name: corp-web, priority: 10, action: allow, from: [{selector: role=corp}], to: [{selector: role=web}],
           services: [{port: 443}]}]
"""


def test_an_endpoint_shows_the_network_it_stands_for() -> None:
    net = addresses.network("192.168.0.0/16")
    assert str(verdicts.Endpoint(net.network_address, "corp", net)) == "corp (192.168.0.0/16)"
    host = addresses.network("10.0.0.1")
    assert str(verdicts.Endpoint(host.network_address, "web", host)) == "web (10.0.0.1)"
    assert str(verdicts.Endpoint(addresses.address("192.168.3.4"), "corp")) == "corp (192.168.3.4)"
    assert verdicts.Endpoint(net.network_address, "corp", net) == verdicts.Endpoint(
        net.network_address, "corp"
    )


def test_a_cidr_workload_by_name_is_its_cidr_and_an_address_in_it_is_that_address() -> None:
    eng = engine.PolicyEngine(policyfile.load_text(ESTATE))
    assert str(eng.endpoint("corp")) == "corp (192.168.0.0/16)"
    assert str(eng.endpoint("192.168.3.4")) == "corp (192.168.3.4)"
    assert str(eng.endpoint("web")) == "web (10.0.0.1)"


def test_explain_prints_the_cidr(tmp_path: Path) -> None:
    (tmp_path / "estate.yaml").write_text(ESTATE)
    result = CliRunner().invoke(
        app, ["explain", "-f", str(tmp_path), "--from", "corp", "--to", "web", "--port", "443"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "corp (192.168.0.0/16) -> web (10.0.0.1) on 443/tcp"
