"""Calico and Cilium export means what the policy says.

The exported manifests, read back from their YAML, are judged by evaluators written from the
upstream documentation (tests/k8s/calico_eval.py, tests/k8s/cilium_eval.py), never from the
exporters: for the example estate with its Kubernetes inventory and for random estates, every
ordered pod pair on every port edge must get the engine's verdict. Every manifest must pass the
CRD schemas, and the example export is kept as golden files (`pytest tests/k8s --update-golden`
rewrites them; review the diff, it is the change in what clusters will run).

The evaluators' own truth tables come first: each case is a statement of the upstream docs.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings

from microseg import errors, policyfile
from microseg.k8s import cluster, export, export_base, importer, manifests
from microseg.model import addresses, labels, rules, selectors, services, tiers
from microseg.model.estate import Endpoint, Estate
from tests.k8s import calico_eval, cilium_eval, crd_schemas, estates, proof

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_FILES = {
    export.Format.NETWORKPOLICY: "k8s-networkpolicy.yaml",
    export.Format.CALICO: "k8s-calico.yaml",
    export.Format.CILIUM: "k8s-cilium.yaml",
}
EXAMPLE_OPTIONS = export_base.Options(port_level=True, skip_icmp=True)
TCP = services.Protocol.TCP
Manifest = Mapping[str, Any]


class Evaluator(Protocol):
    def allowed(self, src: cluster.Pod, dst: cluster.Pod, port: int, protocol: services.Protocol) -> bool: ...


def evaluator(fmt: export.Format, docs: Sequence[Manifest], found: cluster.Cluster) -> Evaluator:
    if fmt is export.Format.CALICO:
        return calico_eval.Evaluator(docs, found)
    return cilium_eval.Evaluator(docs, found)


def read_back(result: export.Export) -> list[Manifest]:
    """The manifests as a cluster would receive them: through their YAML text."""
    text = yaml.dump_all(list(result.manifests), Dumper=yaml.CSafeDumper, sort_keys=False)
    return list(yaml.load_all(text, Loader=yaml.CSafeLoader))


@functools.cache
def _problems(canonical: str) -> tuple[str, ...]:
    return tuple(crd_schemas.problems(json.loads(canonical)))


def schema_problems(manifest: Manifest) -> tuple[str, ...]:
    """crd_schemas.problems, once per distinct manifest: random estates repeat most of them."""
    return _problems(json.dumps(manifest, sort_keys=True))


def disagreements(
    est: Estate, found: cluster.Cluster, fmt: export.Format, options: export_base.Options
) -> list[str]:
    """Every (pair, probe) between pods in scope where the evaluated export and the engine differ
    (see proof.disagreements for what is left out, and why); schema problems too."""
    docs = read_back(export.export(est, found, fmt, options))
    wrong = [f"{m['kind']} {m['metadata']['name']}: {p}" for m in docs for p in schema_problems(m)]
    probes = proof.probes_for(est)
    judge, pods = evaluator(fmt, docs, found), {p.ref: p for p in found.pods}
    expected = proof.in_scope(proof.engine_verdicts(est, found, probes), found, options)
    for (s, d, probe), want in sorted(expected.items()):
        got = judge.allowed(pods[s], pods[d], probe.port, probe.protocol)
        if got != want:
            wrong.append(f"{s} -> {d} {probe}: engine {want}, {fmt.value} {got}")
    return wrong


# --- the evaluators, against the upstream documentation -------------------------------------


def pod(
    ns: str, name: str, ip: str, ports: tuple[cluster.ContainerPort, ...] = (), **lbl: str
) -> cluster.Pod:
    return cluster.Pod(ns, name, labels.Labels(lbl), (ipaddress.ip_address(ip),), ports)


HTTP = cluster.ContainerPort(8080, TCP, "http")
A = pod("ns-a", "a", "10.0.0.1", app="a", **{"pod-template-hash": "5c4b"})
A2 = pod("ns-a", "a2", "10.0.0.2", app="b")
B = pod("ns-b", "b", "10.0.1.1", (HTTP,), app="b")
SMALL = cluster.Cluster.of(
    {
        "ns-a": cluster.Namespace.of("ns-a", {"env": "prod"}),
        "ns-b": cluster.Namespace.of("ns-b", {"env": "dev"}),
    },
    (A, A2, B),
)


def gnp(
    name: str, selector: str = "all()", tier: str | None = None, order: float | None = None, **spec: Any
) -> Manifest:
    body = {
        "selector": selector,
        **({"tier": tier} if tier else {}),
        **({"order": order} if order is not None else {}),
    }
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {**body, **spec},
    }


def calico_np(name: str, ns: str, selector: str = "all()", **spec: Any) -> Manifest:
    meta = {"name": name, "namespace": ns}
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"selector": selector, **spec},
    }


def tier(name: str, order: float, default_action: str = "Deny") -> Manifest:
    spec = {"order": order, "defaultAction": default_action}
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name}, "spec": spec}


ALLOW, DENY, PASS = {"action": "Allow"}, {"action": "Deny"}, {"action": "Pass"}


def ingress(*rules: Mapping[str, Any]) -> dict[str, Any]:
    return {"types": ["Ingress"], "ingress": list(rules)}


def case(
    name: str, docs: list[Manifest], want: bool, src: cluster.Pod = A, dst: cluster.Pod = B, port: int = 80
) -> Any:
    """One truth-table row: `docs` decide a TCP connection from src to dst on port (A -> B:80)."""
    return pytest.param(docs, src, dst, port, want, id=name)


# fmt: off
SELECTORS = [  # (expression, labels, matches): the selector table of the Calico policy references
    ("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}", {}, True),
    ("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}", {"my-label": "prod-1", "role": "business"}, True),
    ("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}", {"my-label": "prod-1", "role": "db"}, False),
    ("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}", {"my-label": "dev", "role": "frontend"}, False),
    ('k == "v"', {"k": "v"}, True),
    ("k != 'v'", {}, True),
    ("k != 'v'", {"k": "v"}, False),
    ('k not in {"a", "b"}', {}, True),
    ("k not in {'a', 'b'}", {"k": "a"}, False),
    ("k in {'a'}", {}, False),
    ("has(k) && !has(j)", {"k": "1"}, True),
    ("!(k == 'v' || j == 'w')", {"j": "w"}, False),
    ("all()", {}, True),
    ("!all()", {"k": "v"}, False),
    ("k ends with 'z' && k contains 'y'", {"k": "xyz"}, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("expression", "lbl", "matches"), SELECTORS, ids=[str(i) for i in range(len(SELECTORS))]
)
def test_calico_selector_language(expression: str, lbl: dict[str, str], matches: bool) -> None:
    assert calico_eval.parse_selector(expression)(lbl) is matches


# fmt: off
CALICO_CASES = [
    case("no policy: the kns profile allows", [], True),
    case("selected, no rule matches: the default tier denies", [gnp("p", "app == 'b'", **ingress())], False),
    case("a GNP rule selector spans namespaces", [gnp("p", "app == 'b'", **ingress({**ALLOW, "source": {"selector": "app == 'a'"}}))], True),
    case("a NetworkPolicy rule selector means its namespace", [calico_np("p", "ns-b", **ingress({**ALLOW, "source": {"selector": "app == 'a'"}}))], False),
    case("namespaceSelector scopes the selector", [calico_np("p", "ns-b", **ingress({**ALLOW, "source": {"namespaceSelector": "env == 'prod'", "selector": "app == 'a'"}}))], True),
    case("namespaceSelector sees projectcalico.org/name", [gnp("p", **ingress({**ALLOW, "source": {"namespaceSelector": "projectcalico.org/name == 'ns-a'"}}))], True),
    case("endpoints carry projectcalico.org/namespace", [gnp("p", "projectcalico.org/namespace == 'ns-b'", **ingress())], False),
    case("endpoints carry projectcalico.org/orchestrator", [gnp("p", **ingress({**ALLOW, "source": {"selector": "projectcalico.org/orchestrator == 'k8s'"}}))], True),
    case("a NetworkPolicy selects only its namespace", [calico_np("p", "ns-a", **ingress())], True),
    case("a GNP's namespaceSelector limits what it applies to", [gnp("p", namespaceSelector="env == 'prod'", **ingress())], True),
    case("nets match pod addresses", [gnp("p", **ingress({**ALLOW, "source": {"nets": ["10.0.0.0/31"]}}))], True),
    case("notNets", [gnp("p", **ingress({**ALLOW, "source": {"notNets": ["10.0.0.1/32"]}}))], False),
    case("port ranges", [gnp("p", **ingress({**ALLOW, "protocol": "TCP", "destination": {"ports": ["70:90"]}}))], True),
    case("named ports resolve on the destination", [gnp("p", **ingress({**ALLOW, "protocol": "TCP", "destination": {"ports": ["http"]}}))], True, port=8080),
    case("protocol must match", [gnp("p", **ingress({**ALLOW, "protocol": "UDP"}))], False),
    case("the first matching rule decides", [gnp("p", **ingress(DENY, ALLOW))], False),
    case("Log continues", [gnp("p", **ingress({"action": "Log"}, ALLOW))], True),
    case("policies run by order", [gnp("p1", order=2, **ingress(DENY)), gnp("p2", order=1, **ingress(ALLOW))], True),
    case("Pass skips the rest of the tier", [tier("t", 10), gnp("p1", tier="t", order=1, **ingress(PASS)), gnp("p2", tier="t", order=2, **ingress(DENY)), gnp("p3", **ingress(ALLOW))], True),
    case("Pass out of the last tier reaches the profile", [tier("t", 10), gnp("p1", tier="t", **ingress(PASS))], True),
    case("a tier that applies and does nothing denies", [tier("t", 10), gnp("p1", tier="t", **ingress()), gnp("p2", **ingress(ALLOW))], False),
    case("defaultAction Pass", [tier("t", 10, "Pass"), gnp("p1", tier="t", **ingress()), gnp("p2", **ingress(ALLOW))], True),
    case("a tier with no policy for the endpoint is skipped", [tier("t", 10), gnp("p1", "app == 'zzz'", tier="t", **ingress()), gnp("p2", **ingress(ALLOW))], True),
    case("tiers run by order", [tier("t1", 20), tier("t2", 10), gnp("p1", tier="t1", **ingress(ALLOW)), gnp("p2", tier="t2", **ingress(DENY))], False),
    case("egress rules alone default types to Egress", [gnp("p", "app == 'a'", egress=[DENY])], True, src=B, dst=A),
    case("the source's egress counts too", [gnp("p", "app == 'a'", egress=[DENY])], False),
]
# fmt: on


@pytest.mark.parametrize(("docs", "src", "dst", "port", "want"), CALICO_CASES)
def test_calico_semantics(
    docs: list[Manifest], src: cluster.Pod, dst: cluster.Pod, port: int, want: bool
) -> None:
    assert calico_eval.allowed(docs, SMALL, src, dst, port, TCP) is want


def cnp(name: str, ns: str, selector: Mapping[str, Any] | None = None, **spec: Any) -> Manifest:
    meta = {"name": name, "namespace": ns}
    spec = {"endpointSelector": selector or {}, **spec}
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta, "spec": spec}


def ccnp(name: str, selector: Mapping[str, Any] | None = None, **spec: Any) -> Manifest:
    spec = {"endpointSelector": selector or {}, **spec}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def match(**lbl: str) -> dict[str, Any]:
    return {"matchLabels": lbl}


def only_b(**spec: Any) -> Manifest:
    """A clusterwide policy for pod B."""
    return ccnp("p", match(app="b"), **spec)


def to_ports(*ports: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"toPorts": [{"ports": list(ports)}]}]


NS_PROD = {"io.cilium.k8s.namespace.labels.env": "prod"}
NS_A = {"k8s:io.kubernetes.pod.namespace": "ns-a"}
NOT_X = {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["x"]}]}
# fmt: off
CILIUM_CASES = [
    case("no policy: allowed", [], True),
    case("an ingress section means default deny", [only_b(ingress=[{"fromEndpoints": [match(app="zzz")]}])], False),
    case("an empty ingress section does nothing", [only_b(ingress=[])], True),
    case("ingress: [{}] allows everything", [only_b(ingress=[{}])], True),
    case("an explicit empty peer list selects nothing", [only_b(ingress=[{"fromEndpoints": []}])], False),
    case("a deny section alone means default deny", [only_b(ingressDeny=[{"fromEndpoints": [match(app="zzz")]}])], False),
    case("enableDefaultDeny false lets the rest through", [only_b(enableDefaultDeny={"ingress": False}, ingressDeny=[{"fromEndpoints": [match(app="zzz")]}])], True),
    case("deny wins over allow", [ccnp("p1", ingress=[{}]), ccnp("p2", ingressDeny=[{"fromEndpoints": [match(app="a")]}])], False),
    case("a CNP's fromEndpoints mean its namespace", [cnp("p", "ns-b", ingress=[{"fromEndpoints": [match(app="a")]}])], False),
    case("a CNP may name the peer's namespace", [cnp("p", "ns-b", ingress=[{"fromEndpoints": [match(**NS_A)]}])], True),
    case("a CCNP's fromEndpoints span namespaces", [ccnp("p", ingress=[{"fromEndpoints": [match(app="a")]}])], True),
    case("a CNP selects only its namespace", [cnp("p", "ns-a", ingress=[{"fromEndpoints": [match(app="zzz")]}])], True),
    case("a CNP's endpointSelector cannot leave its namespace", [cnp("p", "ns-a", match(**{"io.kubernetes.pod.namespace": "ns-b"}), ingress=[{"fromEndpoints": []}])], True),
    case("namespace labels in a CCNP", [ccnp("p", ingress=[{"fromEndpoints": [match(**NS_PROD)]}])], True),
    case("namespace labels in a CNP (Cilium with #30149 fixed)", [cnp("p", "ns-b", ingress=[{"fromEndpoints": [match(**NS_PROD)]}])], True),
    case("k8s: prefix and plain keys", [ccnp("p", match(**{"k8s:app": "b"}), ingress=[{"fromEndpoints": [match(**{"any:app": "a"})]}])], True),
    case("pod-template-hash is not part of the identity", [only_b(ingress=[{"fromEndpoints": [match(**{"pod-template-hash": "5c4b"})]}])], False),
    case("matchExpressions NotIn matches a missing label", [only_b(ingress=[{"fromEndpoints": [NOT_X]}])], True),
    case("CIDR rules never match pods", [only_b(ingress=[{"fromCIDR": ["0.0.0.0/0"]}])], False),
    case("CIDR deny rules never match pods", [ccnp("p", ingress=[{}], ingressDeny=[{"fromCIDRSet": [{"cidr": "10.0.0.0/8"}]}])], True),
    case("entity cluster holds every pod", [only_b(ingress=[{"fromEntities": ["cluster"]}])], True),
    case("entity world holds no pod", [only_b(ingress=[{"fromEntities": ["world"]}])], False),
    case("toPorts ranges with endPort", [only_b(ingress=to_ports({"port": "70", "endPort": 90, "protocol": "TCP"}))], True),
    case("toPorts protocol must match", [only_b(ingress=to_ports({"port": "80", "protocol": "UDP"}))], False),
    case("toPorts protocol ANY by default", [only_b(ingress=to_ports({"port": "80"}))], True),
    case("port 0 means every port", [only_b(ingress=to_ports({"port": "0", "protocol": "TCP"}))], True, port=81),
    case("named ports resolve on the destination", [only_b(ingress=to_ports({"port": "http", "protocol": "TCP"}))], True, port=8080),
    case("the source's egress counts too", [ccnp("p", match(app="a"), egress=[{"toEndpoints": [match(app="zzz")]}])], False),
]
# fmt: on


@pytest.mark.parametrize(("docs", "src", "dst", "port", "want"), CILIUM_CASES)
def test_cilium_semantics(
    docs: list[Manifest], src: cluster.Pod, dst: cluster.Pod, port: int, want: bool
) -> None:
    assert cilium_eval.allowed(docs, SMALL, src, dst, port, TCP) is want


def test_cilium_before_30149_ignored_namespace_labels_in_a_cnp() -> None:
    docs = [cnp("p", "ns-b", ingress=[{"fromEndpoints": [match(**NS_PROD)]}])]
    assert not cilium_eval.Evaluator(docs, SMALL, legacy_cnp_namespace_labels=True).allowed(A, B, 80, TCP)


@pytest.mark.parametrize(
    ("module", "docs"),
    [
        pytest.param(
            calico_eval,
            [gnp("p", **ingress({**ALLOW, "destination": {"ports": [80]}}))],
            id="calico ports need a protocol",
        ),
        pytest.param(calico_eval, [gnp("p", tier="nowhere", **ingress(ALLOW))], id="calico tier must exist"),
        pytest.param(
            cilium_eval,
            [ccnp("p", ingress=[{"fromEndpoints": [{}], "fromEntities": ["world"]}])],
            id="cilium one L3 kind per rule",
        ),
    ],
)
def test_evaluators_reject_what_upstream_rejects(module: Any, docs: list[Manifest]) -> None:
    with pytest.raises(module.InvalidError):
        module.allowed(docs, SMALL, A, B, 80, TCP)


# --- the exports -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_estate() -> Estate:
    return policyfile.load([EXAMPLES / "estate"])


@pytest.fixture(scope="module")
def example_cluster() -> cluster.Cluster:
    return manifests.load([EXAMPLES / "k8s"])


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether this run rewrites golden files (as in tests/render: the flag or the variable)."""
    flag = bool(request.config.getoption("--update-golden", default=False))
    return flag or os.environ.get("MICROSEG_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("fmt", [export.Format.CALICO, export.Format.CILIUM], ids=str)
def test_examples_export_exactly(
    example_estate: Estate, example_cluster: cluster.Cluster, fmt: export.Format
) -> None:
    assert disagreements(example_estate, example_cluster, fmt, EXAMPLE_OPTIONS) == []


@pytest.mark.parametrize("fmt", list(GOLDEN_FILES), ids=str)
def test_examples_export_matches_golden(
    example_estate: Estate, example_cluster: cluster.Cluster, fmt: export.Format, update_golden: bool
) -> None:
    result = export.export(example_estate, example_cluster, fmt, EXAMPLE_OPTIONS)
    text = yaml.safe_dump_all(list(result.manifests), sort_keys=False)
    path = GOLDEN / GOLDEN_FILES[fmt]
    if update_golden:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; run: pytest tests/k8s --update-golden"
    assert path.read_text() == text, f"{path.name} differs; review, then: pytest tests/k8s --update-golden"


def test_no_stale_k8s_golden_files() -> None:
    on_disk = {p.name for p in GOLDEN.glob("k8s-*.yaml")}
    assert on_disk <= set(GOLDEN_FILES.values()), (
        f"golden files without an export: {sorted(on_disk - set(GOLDEN_FILES.values()))}"
    )


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = export_base.Options(skip_icmp=True)
"""As for the examples: ICMP is left out of allows (the probes are TCP, UDP and SCTP)."""


def exact(est: Estate, found: cluster.Cluster, fmt: export.Format) -> None:
    assert disagreements(est, found, fmt, OPTIONS) == []


def exact_or_refused(est: Estate, found: cluster.Cluster, fmt: export.Format) -> None:
    try:
        wrong = disagreements(est, found, fmt, OPTIONS)
    except errors.InexpressibleError as exc:
        assert exc.rules, "a refusal names the rules involved"
        return
    assert wrong == []


@PROPERTY
@given(est=estates.estates(), found=estates.clusters())
def test_calico_label_policies_export_exactly(est: Estate, found: cluster.Cluster) -> None:
    exact(est, found, export.Format.CALICO)


@PROPERTY
@given(est=estates.estates(with_lists=True), found=estates.clusters())
def test_calico_policies_with_addresses_export_exactly_or_refuse(est: Estate, found: cluster.Cluster) -> None:
    exact_or_refused(est, found, export.Format.CALICO)


def two_pods(first: dict[str, str]) -> cluster.Cluster:
    made = (pod("ns-a", "first", "10.77.30.1", **first), pod("ns-a", "second", "10.77.30.2"))
    return cluster.Cluster.of({"ns-a": cluster.Namespace.of("ns-a")}, made)


def make_estate(*made: rules.Rule) -> Estate:
    control_plane = (Endpoint(addresses.network("10.77.0.1"), services.PortRange(8440, 8440)),)
    return Estate(tiers=tiers.BUILTIN_TIERS, rules=made, control_plane=control_plane)


NAMESPACE_PEERS = {
    "namespace": selectors.Requirement(importer.NAMESPACE_KEY, selectors.Operator.IN, ("ns-a",)),
    "namespace label": selectors.Requirement(
        importer.namespace_label_key("env"), selectors.Operator.IN, ("prod",)
    ),
    "namespace label absent": selectors.Requirement(
        importer.namespace_label_key("env"), selectors.Operator.DOES_NOT_EXIST
    ),
}


@pytest.mark.parametrize("key", NAMESPACE_PEERS)
@pytest.mark.parametrize("fmt", [export.Format.CALICO, export.Format.CILIUM], ids=str)
def test_namespace_selectors_export_exactly(fmt: export.Format, key: str) -> None:
    """Selectors on the namespace and its labels, as sources and as destinations, across namespaces."""
    peer = (selectors.SelectorPeer(selectors.LabelSelector((NAMESPACE_PEERS[key],))),)
    web = services.Service("web", (services.PortSpec(TCP, (services.PortRange(80, 80),)),))
    everyone = (selectors.AnyPeer(),)
    made = (
        rules.Rule("from", tiers.APPLICATION, 10, rules.Action.ALLOW, peer, everyone, (web,)),
        rules.Rule("to", tiers.APPLICATION, 20, rules.Action.ALLOW, everyone, peer, (web,)),
    )
    spaces = {"ns-a": cluster.Namespace.of("ns-a", {"env": "prod"}), "ns-b": cluster.Namespace.of("ns-b")}
    made_pods = (
        pod("ns-a", "a", "10.77.30.1"),
        pod("ns-b", "b", "10.77.30.2"),
        pod("ns-b", "c", "10.77.30.3"),
    )
    assert disagreements(make_estate(*made), cluster.Cluster.of(spaces, made_pods), fmt, OPTIONS) == []


ALERTING_TO_ENFORCING = example(est=make_estate(), found=two_pods({importer.MODE_LABEL: "alert"}))
"""Found by the evaluator: a default deny written as `ingress: [{}]` admits everything in Cilium."""


@PROPERTY
@ALERTING_TO_ENFORCING
@given(est=estates.estates(), found=estates.clusters())
def test_cilium_label_policies_export_exactly(est: Estate, found: cluster.Cluster) -> None:
    exact(est, found, export.Format.CILIUM)


@PROPERTY
@ALERTING_TO_ENFORCING
@given(est=estates.estates(with_lists=True), found=estates.clusters())
def test_cilium_policies_with_addresses_export_exactly_or_refuse(est: Estate, found: cluster.Cluster) -> None:
    exact_or_refused(est, found, export.Format.CILIUM)


@pytest.mark.parametrize(
    "fmt",
    [
        export.Format.CALICO,
        export.Format.CILIUM,
    ],
    ids=str,
)
def test_an_alerting_pod_cannot_reach_an_enforcing_one_without_a_rule(fmt: export.Format) -> None:
    assert disagreements(make_estate(), two_pods({importer.MODE_LABEL: "alert"}), fmt, OPTIONS) == []


@pytest.mark.parametrize(
    "fmt",
    [
        export.Format.CALICO,
        export.Format.CILIUM,
    ],
    ids=str,
)
def test_a_deny_any_after_an_allow_exports(fmt: export.Format) -> None:
    web = services.Service("web", (services.PortSpec(TCP, (services.PortRange(80, 80),)),))
    everyone = (selectors.AnyPeer(),)
    made = (
        rules.Rule("web", tiers.APPLICATION, 10, rules.Action.ALLOW, everyone, everyone, (web,)),
        rules.Rule(
            "nothing-else",
            tiers.APPLICATION,
            20,
            rules.Action.DENY,
            everyone,
            everyone,
            (services.ANY_SERVICE,),
        ),
    )
    assert disagreements(make_estate(*made), two_pods({}), fmt, OPTIONS) == []
