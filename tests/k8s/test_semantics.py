"""Our own truth tables for the upstream semantics the conformance data does not exercise:
ipBlock (with except, matching pod IPs), UDP and SCTP, policyTypes defaulting, egress named ports,
endPort, additivity, and what is never reported (pod to itself)."""

from __future__ import annotations

import textwrap
import zlib

import pytest

from microseg.k8s import manifests, reachability
from microseg.model import services

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP, name: dns}]}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432, name: pg}, {containerPort: 9999, protocol: SCTP}]}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.0.2.1}
"""


def verdicts(policies: str, probes: list[str]) -> dict[tuple[str, str, str], bool]:
    text = PODS + "".join(
        "---\n" + textwrap.dedent(p).strip() + "\n" for p in policies.split("===") if p.strip()
    )
    found = manifests.load_text(text)
    parsed = [
        reachability.Probe(int(p.split("/")[0]), services.Protocol(p.split("/")[1].lower())) for p in probes
    ]
    result = reachability.Reachability(found, parsed)
    return {(result.pods[s].ref, result.pods[d].ref, str(p)): ok for s, d, p, ok in result.verdicts()}


def policy(namespace: str, spec: str) -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{zlib.crc32(spec.encode())}, namespace: {namespace}}}\nspec:\n{body}\n===\n"


CASES = [
    # (id, policies, probe, from, to, expected)
    ("no-policy-allows-all", "", "80/TCP", "b/client", "a/web", True),
    (
        "ingress-isolated-empty",
        policy("a", "podSelector: {}\npolicyTypes: [Ingress]"),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "isolation-is-per-namespace",
        policy("b", "podSelector: {}\npolicyTypes: [Ingress]"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "ipblock-matches-pod-ip",
        policy(
            "a", "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{ipBlock: {cidr: 10.0.2.0/24}}]}]"
        ),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "ipblock-except-cuts-pod-ip",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "ipblock-except-keeps-others",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]}]",
        ),
        "80/TCP",
        "a/db",
        "a/web",
        True,
    ),
    (
        "udp-port-needs-udp",
        policy("a", "podSelector: {matchLabels: {app: web}}\ningress: [{ports: [{port: 53}]}]"),
        "53/UDP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "udp-port-allowed",
        policy(
            "a", "podSelector: {matchLabels: {app: web}}\ningress: [{ports: [{port: 53, protocol: UDP}]}]"
        ),
        "53/UDP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "sctp-port",
        policy(
            "a", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 9999, protocol: SCTP}]}]"
        ),
        "9999/SCTP",
        "a/web",
        "a/db",
        True,
    ),
    (
        "sctp-not-tcp",
        policy(
            "a", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 9999, protocol: SCTP}]}]"
        ),
        "9999/TCP",
        "a/web",
        "a/db",
        False,
    ),
    (
        "protocol-only-port",
        policy("a", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{protocol: UDP}]}]"),
        "5432/UDP",
        "a/web",
        "a/db",
        True,
    ),
    (
        "endport-inclusive-high",
        policy(
            "a", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5000, endPort: 5432}]}]"
        ),
        "5432/TCP",
        "a/web",
        "a/db",
        True,
    ),
    (
        "endport-above",
        policy(
            "a", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5000, endPort: 5431}]}]"
        ),
        "5432/TCP",
        "a/web",
        "a/db",
        False,
    ),
    (
        "egress-default-type-from-rules",
        policy("b", "podSelector: {}\negress: [{to: [{podSelector: {matchLabels: {app: nothing}}}]}]"),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "egress-empty-list-is-no-egress-type",
        policy("b", "podSelector: {}\negress: []"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "egress-only-ignores-ingress-rules",
        policy(
            "a",
            "podSelector: {}\npolicyTypes: [Egress]\ningress: [{from: [{podSelector: {matchLabels: {app: nothing}}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "egress-named-port-resolves-on-destination",
        policy("b", "podSelector: {}\negress: [{ports: [{port: http}]}]"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "egress-named-port-other-number",
        policy("a", "podSelector: {matchLabels: {app: db}}\negress: [{ports: [{port: http}]}]"),
        "8080/TCP",
        "a/db",
        "b/client",
        True,
    ),
    (
        "egress-named-port-missing-on-destination",
        policy("a", "podSelector: {matchLabels: {app: web}}\negress: [{ports: [{port: pg}]}]"),
        "8080/TCP",
        "a/web",
        "b/client",
        False,
    ),
    (
        "named-port-needs-same-protocol",
        policy("a", "podSelector: {matchLabels: {app: web}}\ningress: [{ports: [{port: dns}]}]"),
        "53/UDP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "named-port-udp",
        policy(
            "a", "podSelector: {matchLabels: {app: web}}\ningress: [{ports: [{port: dns, protocol: UDP}]}]"
        ),
        "53/UDP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "pod-and-namespace-selector-and",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: db}}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "pod-and-namespace-selector-match",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: client}}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "two-peers-or",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}, {podSelector: {matchLabels: {app: db}}}]}]",
        ),
        "80/TCP",
        "a/db",
        "a/web",
        True,
    ),
    (
        "podselector-only-means-own-namespace",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "empty-namespace-selector-all-namespaces",
        policy("a", "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {}}]}]"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "policies-are-additive",
        policy("a", "podSelector: {}\npolicyTypes: [Ingress]")
        + policy("a", "podSelector: {matchLabels: {app: web}}\ningress: [{}]"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "both-sides-must-allow",
        policy("a", "podSelector: {matchLabels: {app: web}}\ningress: [{}]")
        + policy("b", "podSelector: {}\npolicyTypes: [Egress]"),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
    (
        "egress-ipblock-to-pod",
        policy("b", "podSelector: {}\negress: [{to: [{ipBlock: {cidr: 10.0.1.1/32}}], ports: [{port: 80}]}]"),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "egress-ipblock-other-pod",
        policy("b", "podSelector: {}\negress: [{to: [{ipBlock: {cidr: 10.0.1.1/32}}], ports: [{port: 80}]}]"),
        "80/TCP",
        "b/client",
        "a/db",
        False,
    ),
    (
        "not-in-matches-absent-key",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [x]}]}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        True,
    ),
    (
        "does-not-exist",
        policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}]}]",
        ),
        "80/TCP",
        "b/client",
        "a/web",
        False,
    ),
]


@pytest.mark.parametrize(
    ("policies", "probe", "src", "dst", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_truth_table(policies: str, probe: str, src: str, dst: str, expected: bool) -> None:
    assert verdicts(policies, [probe])[(src, dst, probe)] is expected


def test_pod_to_itself_is_never_reported() -> None:
    got = verdicts("", ["80/TCP"])
    assert got and all(src != dst for src, dst, _ in got)
    assert len(got) == 3 * 2


def test_default_probes_are_each_destinations_container_ports() -> None:
    found = manifests.load_text(PODS)
    result = reachability.Reachability(found)
    probed = {(result.pods[d].ref, str(p)) for _, d, p, _ in result.verdicts()}
    assert probed == {
        ("a/web", "80/TCP"),
        ("a/web", "53/UDP"),
        ("a/db", "5432/TCP"),
        ("a/db", "9999/SCTP"),
        ("b/client", "8080/TCP"),
    }


def test_reasons_name_the_deciding_policies() -> None:
    text = (
        PODS
        + "---\n"
        + policy(
            "a",
            "podSelector: {matchLabels: {app: web}}\ningress: [{from: [{namespaceSelector: {}}], ports: [{port: 80}]}]",
        ).strip("=\n")
    )
    result = reachability.Reachability(
        manifests.load_text(text), [reachability.Probe(80), reachability.Probe(81)]
    )
    index = {p.ref: i for i, p in enumerate(result.pods)}
    name = result.index.cluster.policies[0].ref
    assert (
        result.reason(index["b/client"], index["a/web"], reachability.Probe(80))
        == f"ingress allowed by {name}; egress: source not isolated"
    )
    assert (
        result.reason(index["b/client"], index["a/web"], reachability.Probe(81))
        == f"ingress isolated by {name} and no ingress rule admits it; egress: source not isolated"
    )
    assert (
        result.reason(index["a/web"], index["b/client"], reachability.Probe(80))
        == "ingress: destination not isolated; egress: source not isolated"
    )
