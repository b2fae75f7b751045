"""Pods become workloads named `namespace.pod`: a name of the one grammar the server accepts, one
URL path segment, split back at the first dot (a namespace has none)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from microseg import policyfile
from microseg.cli.main import app
from microseg.k8s import cluster, importer, manifests
from microseg.model import addresses, names

INVENTORY = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples" / "k8s"


def pod(namespace: str, name: str, ip: str = "10.244.0.5") -> cluster.Pod:
    return cluster.Pod(namespace, name, ips=(addresses.address(ip),))


def test_every_imported_workload_has_a_name_of_the_grammar() -> None:
    imported = importer.import_pods(manifests.load([INVENTORY])).workloads
    assert imported
    for w in imported:
        assert names.OBJECT_NAME.fullmatch(w.name) and "/" not in w.name, w.name
        namespace, _, pod_name = w.name.partition(".")
        assert (namespace, pod_name) == (w.attributes["k8s.namespace"], w.attributes["hostname"])


def test_a_name_past_the_limit_is_cut_and_stays_distinct() -> None:
    long = "a" * 250
    first, second = pod("ns", long + "-1"), pod("ns", long + "-2", "10.244.0.6")
    made = importer.import_pods(cluster.Cluster.of(pods=(first, second))).workloads
    assert len({w.name for w in made}) == 2
    assert all(len(w.name) == names.MAX_LENGTH and names.OBJECT_NAME.fullmatch(w.name) for w in made)
    assert importer.workload_name(pod("shop", "web.v2-abc")) == "shop.web.v2-abc"


def test_import_output_validates(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["k8s", "import", "-f", str(INVENTORY)])
    assert result.exit_code == 0, result.stderr
    (tmp_path / "pods.yaml").write_text(result.stdout)
    est = policyfile.load([tmp_path / "pods.yaml"])
    assert "crm-prod.web-7d9f-abcde" in {w.name for w in est.workloads}
