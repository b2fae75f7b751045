"""`microseg k8s import|export|reachability` end to end: what a user runs, what a script reads."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from microseg import policyfile
from microseg.cli.main import app
from microseg.k8s import importer, manifests
from tests.k8s import fakeapi

INVENTORY = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples" / "k8s"
KUBERNETES = "1.33"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_export_networkpolicy_is_valid_against_the_kubernetes_openapi_schema() -> None:
    code, out, err = run("k8s", "export", "--example", "--port-level", "--skip-icmp")
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert docs and {d["kind"] for d in docs} == {"NetworkPolicy"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert (
        "warning: rule application/prod-app-to-db: process/user of mysql not enforced (port level only)"
        in err
    )
    names = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}
    assert ("crm-prod", "ms-default-deny") in names and ("crm-dev", "ms-not-enforced") in names


def test_the_kubernetes_schema_check_bites() -> None:
    _, out, _ = run("k8s", "export", "--example", "--port-level", "--skip-icmp")
    doc = next(yaml.safe_load_all(out))
    doc["spec"]["ingres"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_export_refuses_naming_the_rule_and_prints_nothing() -> None:
    code, out, err = run("k8s", "export", "--example")
    assert code == 2
    assert out == ""
    assert "rule application/bastion-ssh: service ssh names a process or user" in err
    assert "--port-level" in err


@pytest.mark.parametrize("target", ["calico", "cilium"])
def test_export_other_formats_as_a_json_list(target: str, tmp_path: Path) -> None:
    out_file = tmp_path / "out.json"
    code, out, err = run(
        "k8s",
        "export",
        "--example",
        "--format",
        target,
        "--port-level",
        "--skip-icmp",
        "-o",
        "json",
        "--out",
        str(out_file),
    )
    assert code == 0, err
    assert out == ""
    data = json.loads(out_file.read_text())
    assert data["kind"] == "List" and data["items"]
    assert all(item["apiVersion"] in ("projectcalico.org/v3", "cilium.io/v2") for item in data["items"])


def test_import_writes_policy_files_that_load_beside_the_vms(tmp_path: Path) -> None:
    code, out, err = run("k8s", "import", "-f", str(INVENTORY))
    assert code == 0, err
    pods = tmp_path / "pods.yaml"
    pods.write_text(out)
    est = policyfile.load([INVENTORY.parent / "estate", pods])
    loaded = {w.name: w for w in est.workloads if w.kind.value == "pod"}
    expected = importer.import_pods(manifests.load([INVENTORY])).workloads
    assert loaded == {w.name: w for w in expected}
    web = loaded["crm-prod.web-7d9f-abcde"]
    assert web.labels["k8s.namespace"] == "crm-prod" and web.labels["k8s.ns.team"] == "crm"
    assert loaded["crm-dev.web-6b8c-pqrst"].mode.value == "alert"


def test_reachability_of_a_live_cluster(tmp_path: Path) -> None:
    with fakeapi.serving(fakeapi.FakeApi()) as api:
        config = tmp_path / "kubeconfig"
        config.write_text(fakeapi.kubeconfig(api.url))
        code, out, err = run("k8s", "reachability", "--kubeconfig", str(config), "-o", "json", "--port", "80")
    assert code == 0, err
    connections = json.loads(out)["connections"]
    assert connections and all(c["port"] == 80 and c["protocol"] == "TCP" for c in connections)
    assert any(api.url in r or r.startswith("/api/v1/pods") for r in api.requests)


def test_files_and_a_live_cluster_are_not_mixed(tmp_path: Path) -> None:
    code, _, err = run("k8s", "reachability", "-f", str(INVENTORY), "--kubeconfig", str(tmp_path / "k"))
    assert code == 2 and "not both" in err
    code, _, err = run("k8s", "reachability")
    assert code == 2 and "no manifests" in err


def test_bad_port_option_is_a_clear_error() -> None:
    code, _, err = run("k8s", "reachability", "-f", str(INVENTORY), "--port", "80/ICMP")
    assert code == 2 and "protocol must be TCP, UDP or SCTP" in err
