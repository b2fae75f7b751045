"""Names follow the server's one grammar (`model.names`); one run reports every problem; `TCP` is
tcp; a Kubernetes manifest in a policy tree gets a hint, not a riddle."""

from __future__ import annotations

import pytest

from microseg import errors, policyfile
from microseg.model import names
from tests.policyfile import texts


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("Workload", "spec: {addresses: [10.1.1.1]}"),
        ("IPList", "spec: {cidrs: [10.0.0.0/8]}"),
        ("Service", "spec: {ports: [{port: 80}]}"),
        ("LabelRule", "spec: {match: {os: linux}, labels: {a: b}}"),
    ],
)
@pytest.mark.parametrize("name", ["shop/web-1", "web 1", "-web", "a?b", "x" * 254])
def test_a_name_the_server_would_refuse_is_refused_in_files(kind: str, spec: str, name: str) -> None:
    found = texts.problems(texts.doc(kind, f"metadata: {{name: '{name}'}}\n{spec}\n"))
    assert [(p.line, p.field) for p in found] == [(3, "metadata.name")]
    assert names.GRAMMAR in found[0].message
    assert ("namespace.pod" in found[0].message) is ("/" in name)


@pytest.mark.parametrize("name", ["crm-prod.web-7d9f-abcde", "db.example.com", "Host_01", "a:b", "x" * 253])
def test_names_of_the_grammar_load(name: str) -> None:
    est = policyfile.load_text(
        texts.doc("Workload", f"metadata: {{name: '{name}'}}\nspec: {{addresses: [10.1.1.1]}}\n")
    )
    assert est.workloads[0].name == name


def test_every_problem_comes_in_one_run_even_behind_a_broken_service() -> None:
    """Before: the rule name was checked only once the rule could be built, so it showed up only
    after the service was fixed."""
    found = texts.problems(texts.doc("Service", "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: bogus}]}\n")
                           + "---\n" + texts.doc("Policy", """\
        metadata: {name: p}
        spec:
          tier: application
          rules: [{name: Bad_Name, priority: 1, action: allow, from: any, to: any, services: [web]}]
        """) + "---\n" + texts.doc("Tier", "metadata: {name: Bad_Tier}\nspec: {order: nope}\n"))  # fmt: skip
    assert [(p.field, p.message.split(":")[0]) for p in found] == [
        ("spec.ports[0].protocol", "'bogus' is not one of tcp, udp, sctp, icmp, any"),
        ("spec.rules[0].name", "rule name 'Bad_Name'"),
        ("metadata.name", "tier name 'Bad_Tier'"),
        ("spec.order", "expected an integer, got text 'nope'"),
    ]


def test_a_policy_name_groups_rules_and_is_not_an_object_name() -> None:
    est = policyfile.load_text(texts.doc("Policy", """\
        metadata: {name: team/crm}
        spec: {tier: application, rules: [{name: r, priority: 1, action: allow, from: any, to: any, services: any}]}
        """))  # fmt: skip
    assert est.rules[0].policy == "team/crm"


@pytest.mark.parametrize("spelling", ["TCP", "Tcp", "tcp"])
def test_protocol_names_in_any_case_mean_the_protocol_and_dump_in_lower_case(spelling: str) -> None:
    est = policyfile.load_text(
        texts.doc(
            "Service", f"metadata: {{name: web}}\nspec: {{ports: [{{port: 80, protocol: {spelling}}}]}}\n"
        )
    )
    assert est.services[0].specs[0].protocol.value == "tcp"
    assert "protocol: tcp" in policyfile.dump(est)


def test_a_wrong_protocol_is_still_named_as_written() -> None:
    found = texts.problems(
        texts.doc("Service", "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: TPC}]}\n")
    )
    assert found[0].message == "'TPC' is not one of tcp, udp, sctp, icmp, any (did you mean 'tcp'?)"


@pytest.mark.parametrize(
    ("api", "kind"),
    [("apps/v1", "Deployment"), ("v1", "Pod"), ("networking.k8s.io/v1", "NetworkPolicy"),
     ("projectcalico.org/v3", "GlobalNetworkPolicy"), ("cilium.io/v2", "CiliumNetworkPolicy")],
)  # fmt: skip
def test_a_kubernetes_manifest_in_a_policy_tree_gets_a_hint(api: str, kind: str) -> None:
    (problem,) = texts.problems(f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: web}}\nspec: {{}}\n")
    assert problem.field == "apiVersion"
    assert problem.message.startswith(
        f"this is a Kubernetes manifest ({api} {kind}), not a microseg policy file"
    )
    assert "microseg k8s import" in problem.message and "microseg k8s reachability" in problem.message


@pytest.mark.parametrize("api", ["microseg.io/v2", "v2 of something", "nope"])
def test_other_api_versions_get_the_plain_message(api: str) -> None:
    (problem,) = texts.problems(f"apiVersion: {api}\nkind: Workload\nmetadata: {{name: web}}\n")
    assert problem.message == f"unsupported apiVersion {api!r} (expected microseg.io/v1)"


def test_problems_name_nothing_twice() -> None:
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load_text(texts.doc("Tier", "metadata: {name: Bad/Tier}\nspec: {order: 250}\n"))
    assert len(caught.value.problems) == 1
