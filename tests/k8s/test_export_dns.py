"""Exports leave kube-system alone and keep DNS working (issue 16): the example estate with its
inventory plus a kube-system namespace holding CoreDNS (`k8s-app=kube-dns`, 53/UDP and 53/TCP).

NetworkPolicy is judged by the reachability analyser, Calico and Cilium by the evaluators written
from their documentation (tests/k8s/calico_eval.py, cilium_eval.py), and their selectors are read
directly: nothing exported selects a kube-system pod, and every pod reaches kube-dns on 53 unless
--no-dns, which then cuts it (so the DNS checks can fail). Between pods in scope the exports stay
exactly the engine's verdicts with DNS on and off.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from microseg import errors, policyfile
from microseg.cli.main import app
from microseg.k8s import cluster, export, export_base, manifests, reachability
from microseg.model import labels, services
from microseg.model.estate import Estate
from tests.k8s import calico_eval, cilium_eval, proof
from tests.k8s import test_export_calico_cilium as other_formats

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples"
UDP, TCP = services.Protocol.UDP, services.Protocol.TCP
DNS_PROBES = [reachability.Probe(53, UDP), reachability.Probe(53, TCP)]
KUBE_DNS = cluster.Pod(
    "kube-system",
    "coredns-5d78c9869d-abcde",
    labels.Labels({"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"}),
    (ipaddress.ip_address("10.77.90.10"),),
    (cluster.ContainerPort(53, UDP, "dns"), cluster.ContainerPort(53, TCP, "dns-tcp")),
)
DNS_ON = export_base.Options(port_level=True, skip_icmp=True)
DNS_OFF = dataclasses.replace(DNS_ON, dns=False)
Manifest = Mapping[str, Any]


@pytest.fixture(scope="module")
def example_estate() -> Estate:
    return policyfile.load([EXAMPLES / "estate"])


@pytest.fixture(scope="module")
def with_dns() -> cluster.Cluster:
    """The example inventory with a kube-system namespace running CoreDNS."""
    found = manifests.load([EXAMPLES / "k8s"])
    spaces = {**found.namespaces, "kube-system": cluster.Namespace.of("kube-system")}
    return cluster.Cluster.of(spaces, (*found.pods, KUBE_DNS))


def workloads_pods(found: cluster.Cluster) -> list[cluster.Pod]:
    return [p for p in found.pods if p.namespace != "kube-system"]


def read_back(result: export.Export) -> list[Manifest]:
    return list(yaml.safe_load_all(yaml.safe_dump_all(list(result.manifests), sort_keys=False)))


def netpol_dns_verdicts(est: Estate, found: cluster.Cluster, options: export_base.Options) -> dict[str, bool]:
    """pod ref -> whether the analyser lets it reach kube-dns on both 53/UDP and 53/TCP."""
    result = export.export(est, found, export.Format.NETWORKPOLICY, options)
    policies = manifests.load_text(yaml.safe_dump_all(list(result.manifests)), "exported.yaml").policies
    analysed = reachability.Reachability(dataclasses.replace(found, policies=policies), DNS_PROBES)
    pods = analysed.pods
    reached: dict[str, list[bool]] = {}
    for s, d, _, ok in analysed.verdicts():
        if pods[d].ref == KUBE_DNS.ref:
            reached.setdefault(pods[s].ref, []).append(ok)
    return {ref: all(oks) and len(oks) == len(DNS_PROBES) for ref, oks in reached.items()}


# --- NetworkPolicy: the analyser ---------------------------------------------------------------


def test_networkpolicy_every_pod_reaches_kube_dns(example_estate: Estate, with_dns: cluster.Cluster) -> None:
    reached = netpol_dns_verdicts(example_estate, with_dns, DNS_ON)
    assert reached == {p.ref: True for p in workloads_pods(with_dns)}


def test_networkpolicy_no_dns_cuts_it_for_enforcing_pods(
    example_estate: Estate, with_dns: cluster.Cluster
) -> None:
    reached = netpol_dns_verdicts(example_estate, with_dns, DNS_OFF)
    prod = [p.ref for p in with_dns.pods if p.namespace == "crm-prod"]
    assert prod and not any(reached[ref] for ref in prod)


def test_networkpolicy_selects_no_kube_system_pod(example_estate: Estate, with_dns: cluster.Cluster) -> None:
    docs = read_back(export.export(example_estate, with_dns, export.Format.NETWORKPOLICY, DNS_ON))
    policies = manifests.load_text(yaml.safe_dump_all(docs), "exported.yaml").policies
    index = reachability.Reachability(dataclasses.replace(with_dns, policies=policies), DNS_PROBES)
    (dns,) = [k for k, p in enumerate(index.pods) if p.ref == KUBE_DNS.ref]
    others = [k for k, p in enumerate(index.pods) if k != dns]
    # nothing isolates kube-dns: every pod that may send reaches it, on every probe
    assert {d["metadata"]["namespace"] for d in docs} == {"crm-prod", "crm-dev"}
    assert all(ok for s, d, _, ok in index.verdicts() if d == dns and s in others)


@pytest.mark.parametrize("options", [DNS_ON, DNS_OFF], ids=["dns", "no-dns"])
def test_networkpolicy_stays_exact_between_pods_in_scope(
    example_estate: Estate, with_dns: cluster.Cluster, options: export_base.Options
) -> None:
    assert proof.disagreements(example_estate, with_dns, options) == []


# --- Calico and Cilium: their evaluators and their selectors ------------------------------------


FORMATS = [export.Format.CALICO, export.Format.CILIUM]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_every_pod_reaches_kube_dns(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format
) -> None:
    docs = read_back(export.export(example_estate, with_dns, fmt, DNS_ON))
    judge = other_formats.evaluator(fmt, docs, with_dns)
    for pod in workloads_pods(with_dns):
        for probe in DNS_PROBES:
            assert judge.allowed(pod, KUBE_DNS, probe.port, probe.protocol), (pod.ref, probe)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_no_dns_cuts_it_for_enforcing_pods(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format
) -> None:
    docs = read_back(export.export(example_estate, with_dns, fmt, DNS_OFF))
    judge = other_formats.evaluator(fmt, docs, with_dns)
    prod = [p for p in with_dns.pods if p.namespace == "crm-prod"]
    assert prod and not any(judge.allowed(p, KUBE_DNS, 53, UDP) for p in prod)


@pytest.mark.parametrize("options", [DNS_ON, DNS_OFF], ids=["dns", "no-dns"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_stays_exact_between_pods_in_scope(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format, options: export_base.Options
) -> None:
    assert other_formats.disagreements(example_estate, with_dns, fmt, options) == []


def calico_selects(doc: Manifest, pod: cluster.Pod, ns: cluster.Namespace) -> bool:
    spec = doc["spec"]
    on_pod = calico_eval.parse_selector(spec.get("selector", ""))(calico_eval.endpoint_labels(pod, ns))
    on_ns = calico_eval.parse_selector(spec.get("namespaceSelector", ""))(calico_eval.namespace_labels(ns))
    return bool(on_pod and on_ns)


def cilium_selects(doc: Manifest, pod: cluster.Pod, ns: cluster.Namespace) -> bool:
    selector = cilium_eval.EndpointSelector.of(doc["spec"]["endpointSelector"])
    return selector.matches(cilium_eval.identity_labels(pod, ns))


SELECTS = {export.Format.CALICO: calico_selects, export.Format.CILIUM: cilium_selects}
DEFAULT_DENY = {export.Format.CALICO: "ms-default.deny", export.Format.CILIUM: "ms-default-deny-"}


def policies(docs: Sequence[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in ("GlobalNetworkPolicy", "CiliumClusterwideNetworkPolicy")]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_no_policy_selects_a_kube_system_pod(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format
) -> None:
    docs = policies(read_back(export.export(example_estate, with_dns, fmt, DNS_ON)))
    system = with_dns.namespaces["kube-system"]
    assert docs and not [d["metadata"]["name"] for d in docs if SELECTS[fmt](d, KUBE_DNS, system)]
    # the same pod in an inventory namespace is isolated: the check above can fail
    moved = dataclasses.replace(KUBE_DNS, namespace="crm-prod")
    deny = [d for d in docs if d["metadata"]["name"].startswith(DEFAULT_DENY[fmt])]
    assert any(SELECTS[fmt](d, moved, with_dns.namespaces["crm-prod"]) for d in deny)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_default_deny_is_limited_to_the_inventory_namespaces(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format
) -> None:
    docs = policies(read_back(export.export(example_estate, with_dns, fmt, DNS_ON)))
    deny = [d for d in docs if d["metadata"]["name"].startswith(DEFAULT_DENY[fmt])]
    text = yaml.safe_dump(deny)
    assert "crm-prod" in text and "crm-dev" in text and "kube-system" not in selectors_text(deny)


def selectors_text(docs: Sequence[Manifest]) -> str:
    """Only what chooses the policy's own pods (rules may name kube-system as a peer)."""
    keys = ("selector", "namespaceSelector", "endpointSelector")
    return yaml.safe_dump([{k: d["spec"].get(k) for k in keys} for d in docs])


CALICO_DNS = [
    {"action": "Allow", "protocol": p, "destination": {"selector": "k8s-app == 'kube-dns'",
     "namespaceSelector": "projectcalico.org/name == 'kube-system'", "ports": [53]}}
    for p in ("UDP", "TCP")
]  # fmt: skip
CILIUM_DNS = {
    "toEndpoints": [
        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
    ],
    "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}],
}


@pytest.mark.parametrize("dns", [True, False], ids=["dns", "no-dns"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_the_dns_rule_is_in_the_default_deny_unless_no_dns(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format, dns: bool
) -> None:
    docs = policies(read_back(export.export(example_estate, with_dns, fmt, DNS_ON if dns else DNS_OFF)))
    deny = [d for d in docs if d["metadata"]["name"].startswith(DEFAULT_DENY[fmt])]
    for doc in deny:
        egress = doc["spec"]["egress"]
        present = (
            all(r in egress for r in CALICO_DNS) if fmt is export.Format.CALICO else CILIUM_DNS in egress
        )
        assert present is dns, doc["metadata"]["name"]


# --- scope and warnings ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(export.Format), ids=str)
def test_the_dns_allowance_is_always_warned(
    example_estate: Estate, with_dns: cluster.Cluster, fmt: export.Format
) -> None:
    on = export.export(example_estate, with_dns, fmt, DNS_ON).warnings
    off = export.export(example_estate, with_dns, fmt, DNS_OFF).warnings
    assert export_base.DNS_ALLOWED in on and export_base.DNS_DROPPED not in on
    assert export_base.DNS_DROPPED in off and export_base.DNS_ALLOWED not in off
    assert any(w.startswith("namespace kube-system left alone") for w in on)


def test_namespace_option_names_what_is_isolated(example_estate: Estate, with_dns: cluster.Cluster) -> None:
    only_prod = dataclasses.replace(DNS_ON, namespaces=("crm-prod",))
    docs = read_back(export.export(example_estate, with_dns, export.Format.NETWORKPOLICY, only_prod))
    assert {d["metadata"]["namespace"] for d in docs} == {"crm-prod"}
    asked = dataclasses.replace(DNS_ON, namespaces=("crm-prod", "kube-system"))
    docs = read_back(export.export(example_estate, with_dns, export.Format.NETWORKPOLICY, asked))
    assert "kube-system" in {d["metadata"]["namespace"] for d in docs}


def test_an_unknown_namespace_is_refused(example_estate: Estate, with_dns: cluster.Cluster) -> None:
    wrong = dataclasses.replace(DNS_ON, namespaces=("crm-prdo",))
    with pytest.raises(errors.ValidationError, match="--namespace crm-prdo"):
        export.export(example_estate, with_dns, export.Format.NETWORKPOLICY, wrong)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_warns_about_dns_either_way() -> None:
    base = ("k8s", "export", "--example", "--port-level", "--skip-icmp")
    code, out, err = run(*base)
    assert code == 0, err
    assert f"warning: {export_base.DNS_ALLOWED}" in err and "kube-dns" in out
    code, out, err = run(*base, "--no-dns")
    assert code == 0, err
    assert f"warning: {export_base.DNS_DROPPED}" in err and "kube-dns" not in out
    code, out, err = run(*base, "--namespace", "crm-prod")
    assert code == 0, err
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(out)} == {"crm-prod"}
