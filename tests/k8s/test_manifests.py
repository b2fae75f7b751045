"""Reading manifests: every supported shape loads; every wrong value is reported with file, line,
document and field, and nothing is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg import errors
from microseg.cli.main import app
from microseg.k8s import manifests

POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 5432}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(errors.ManifestError) as caught:
        manifests.load_text(text, "m.yaml")
    return [str(p) for p in caught.value.problems]


def test_controllers_stand_for_pods_when_there_are_no_pod_objects() -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec: {jobTemplate: {spec: {template: {metadata: {labels: {app: report}}, spec: {containers: [{name: c}]}}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: shop}
spec: {template: {metadata: {labels: {app: web2}}, spec: {containers: [{name: c}]}}}
"""
    found = manifests.load_text(text)
    assert [p.ref for p in found.pods] == ["shop/report", "shop/web-deployment", "shop/web-statefulset"]
    web = found.pods[1]
    assert dict(web.labels) == {"app": "web"} and web.ips == () and web.origin == "Deployment template"
    assert web.named_port("http", web.ports[0].protocol) == 8080


def test_pod_objects_win_over_templates_and_finished_pods_are_left_out() -> None:
    text = """
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Pod, metadata: {name: web-1, namespace: shop, labels: {app: web}}, status: {podIP: 10.1.1.1, phase: Running}}
  - {apiVersion: v1, kind: Pod, metadata: {name: job-1, namespace: shop}, status: {phase: Succeeded}}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: shop}, spec: {template: {metadata: {labels: {app: web}}}}}
  - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}, spec: {ports: [{port: 80}]}}
  - {apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: x, namespace: shop}, spec: {}}
"""
    found = manifests.load_text(text)
    assert [p.ref for p in found.pods] == ["shop/web-1"]
    assert str(found.pods[0].ips[0]) == "10.1.1.1"
    assert any("CiliumNetworkPolicy: 1 object not analysed" in n for n in found.notes)
    assert any("controller templates ignored" in n for n in found.notes)


def test_namespaces_get_their_name_label_and_implicit_namespaces_exist() -> None:
    found = manifests.load_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n---\n" + POLICY
    )
    assert dict(found.namespaces["shop"].labels) == {"team": "a", "kubernetes.io/metadata.name": "shop"}
    found = manifests.load_text(POLICY)
    assert dict(found.namespaces["shop"].labels) == {"kubernetes.io/metadata.name": "shop"}


def test_json_files_and_kubectl_lists_are_read(tmp_path: Path) -> None:
    pod_list = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [
            {
                "metadata": {"name": "a", "namespace": "x", "labels": {"k": "v"}},
                "kind": "Pod",
                "status": {"podIPs": [{"ip": "fd00::1"}]},
            },
        ],
    }
    (tmp_path / "pods.json").write_text(json.dumps(pod_list))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "policy.yml").write_text(POLICY)
    (tmp_path / ".hidden.yaml").write_text("this: [is not read")
    found = manifests.load([tmp_path])
    assert [p.ref for p in found.pods] == ["x/a"] and str(found.pods[0].ips[0]) == "fd00::1"
    assert [p.ref for p in found.policies] == ["shop/allow"]


def test_defaults_of_the_api_server_are_applied() -> None:
    policy = manifests.load_text(POLICY).policies[0]
    assert policy.isolates_ingress and not policy.isolates_egress
    assert policy.ingress[0].ports[0].protocol.value == "tcp"
    with_egress = manifests.load_text(POLICY + "  egress: [{}]\n").policies[0]
    assert with_egress.isolates_egress


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("ports: [{port: 5432}]", "ports: [{port: 70000}]"),
            "m.yaml:8: document 1 (NetworkPolicy shop/allow) spec.ingress[0].ports[0].port: port 70000 is outside 1-65535",
        ),
        (
            ("ports: [{port: 5432}]", "ports: [{port: 5432, protcol: UDP}]"),
            "spec.ingress[0].ports[0].protcol: unknown field 'protcol' (did you mean 'protocol'?",
        ),
        (
            ("ports: [{port: 5432}]", "ports: [{port: 5432, protocol: ICMP}]"),
            "spec.ingress[0].ports[0].protocol: text 'ICMP' is not TCP, UDP or SCTP",
        ),
        (
            ("ports: [{port: 5432}]", "ports: [{port: 5432, endPort: 5000}]"),
            "spec.ingress[0].ports[0].endPort: endPort 5000 is below port 5432",
        ),
        (("ports: [{port: 5432}]", "ports: [{port: pg, endPort: 5000}]"), "endPort needs a numeric port"),
        (("ports: [{port: 5432}]", "ports: [{port: Not_A_Name}]"), "is not a port number or a port name"),
        (
            (
                "{podSelector: {matchLabels: {app: web}}}",
                "{podSelector: {matchLabels: {app: web}}, ipBlock: {cidr: 10.0.0.0/8}}",
            ),
            "ipBlock cannot be combined",
        ),
        (
            (
                "{podSelector: {matchLabels: {app: web}}}",
                "{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}",
            ),
            "except 11.0.0.0/16 must lie strictly inside cidr 10.0.0.0/8",
        ),
        (
            ("{podSelector: {matchLabels: {app: web}}}", "{ipBlock: {cidr: 10.0.0.300/8}}"),
            "ipBlock.cidr: '10.0.0.300/8' is not an IP address or CIDR",
        ),
        (
            ("{podSelector: {matchLabels: {app: web}}}", "{}"),
            "a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (
            ("{matchLabels: {app: db}}", "{matchExpressions: [{key: app, operator: Exists, values: [x]}]}"),
            "spec.podSelector.matchExpressions[0].values: app Exists: takes no values",
        ),
        (
            ("{matchLabels: {app: db}}", "{matchExpressions: [{key: app, operator: Inn, values: [x]}]}"),
            "'Inn' is not one of In, NotIn, Exists, DoesNotExist (did you mean 'In'?)",
        ),
        (
            ("  ingress:", "  policyTypes: [Ingres]\n  ingress:"),
            "spec.policyTypes[0]: 'Ingres' is not Ingress or Egress",
        ),
        (
            ("  ingress:", "  ingres: []\n  ingress:"),
            "spec.ingres: unknown field 'ingres' (did you mean 'ingress'?",
        ),
        (("  podSelector: {matchLabels: {app: db}}\n", ""), "spec: missing required field 'podSelector'"),
        (
            ("networking.k8s.io/v1", "extensions/v1beta1"),
            "apiVersion: NetworkPolicy must be networking.k8s.io/v1",
        ),
    ],
)
def test_wrong_policies_are_reported_precisely(change: tuple[str, str], expected: str) -> None:
    assert change[0] in POLICY
    found = problems(POLICY.replace(*change, 1))
    assert any(expected in p for p in found), found


def test_pod_problems_name_the_document_in_a_list_and_every_problem_is_reported() -> None:
    text = """apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: x}
    spec: {containers: [{name: c, ports: [{containerPort: "eighty"}]}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: x}
    status: {podIP: 10.0.0.999}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x}
"""
    found = problems(text)
    assert any(
        p.startswith(
            "m.yaml:7: document 1 (Pod x/a) items[0].spec.containers[0].ports[0].containerPort: expected an integer"
        )
        for p in found
    ), found
    assert any(
        "m.yaml:11: document 1 (Pod x/b) items[1].status.podIP: '10.0.0.999' is not an IP address" in p
        for p in found
    ), found
    assert len(found) == 2


def test_duplicates_and_yaml_errors_are_reported() -> None:
    assert any("duplicate NetworkPolicy shop/allow" in p for p in problems(POLICY + "---\n" + POLICY))
    assert any(p.startswith("m.yaml:3: YAML syntax error") for p in problems("a: [\nb: c"))
    assert any("expected a Kubernetes object" in p for p in problems("- just\n- a list\n"))


def test_cli_exits_2_naming_file_document_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("port: 5432", "port: 0"))
    run = CliRunner().invoke(app, ["k8s", "reachability", "-f", str(bad), "-o", "json"])
    assert run.exit_code == 2
    assert (
        f"{bad}:8: document 1 (NetworkPolicy shop/allow) spec.ingress[0].ports[0].port: port 0 is outside 1-65535"
        in run.output
    )
    assert "connections" not in run.stdout
    missing = CliRunner().invoke(app, ["k8s", "reachability", "-f", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or directory" in missing.output
