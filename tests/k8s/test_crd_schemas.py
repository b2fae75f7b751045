"""The Calico and Cilium schemas bite: upstream-style examples of every kind pass, and each kind of
mistake an exporter could make (an unknown field, a wrong enum, a wrong type, a missing required
field, a rule upstream's validation refuses) fails with its JSON path named."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.k8s import crd_schemas

VALID_TEXT = {
    "calico-tier": """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec:
  order: 100
  defaultAction: Pass
""",
    "calico-default-tier": """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
spec: {order: 1000000, defaultAction: Deny}
""",
    "calico-quarantine": """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: security.quarantine
  labels: {app.kubernetes.io/managed-by: microseg}
  annotations: {microseg.io/rule: quarantine/isolate}
spec:
  tier: security
  order: 10
  selector: quarantine == 'true'
  types: [Ingress, Egress]
  ingress:
    - action: Deny
  egress:
    - action: Deny
""",
    "calico-guard-rails": """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.dev-never-reaches-prod}
spec:
  tier: security
  order: 20.5
  selector: env == 'prod'
  namespaceSelector: has(projectcalico.org/name)
  serviceAccountSelector: role == 'app'
  types: [Ingress]
  performanceHints: [AssumeNeededOnEveryNode]
  ingress:
    - action: Log
      source: {selector: env == 'dev'}
    - action: Deny
      source: {selector: env == 'dev', namespaceSelector: global()}
    - action: Allow
      protocol: TCP
      source:
        nets: [10.77.0.0/16, 2001:db8::/32, 192.0.2.7]
        notNets: [10.77.9.0/24]
        serviceAccounts: {names: [web, api], selector: team == 'crm'}
      destination:
        ports: [3306, "8000:8100", "http"]
        notPorts: [8050]
    - action: Allow
      protocol: 17
      destination: {ports: [53]}
    - action: Allow
      protocol: ICMP
      ipVersion: 4
      icmp: {type: 8, code: 0}
    - action: Allow
      protocol: ICMPv6
      ipVersion: 6
      notICMP: {type: 128}
    - action: Allow
      notProtocol: UDPLite
      destination: {services: {name: kubernetes, namespace: default}}
    - action: Allow
      protocol: TCP
      http:
        methods: [GET]
        paths: [{prefix: /api}, {exact: /health}]
      metadata: {annotations: {microseg.io/rule: security/allow-api}}
    - action: Pass
""",
    "calico-host-untracked": """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-bgp}
spec:
  selector: has(host-endpoint)
  order: 1
  doNotTrack: true
  applyOnForward: true
  ingress:
    - {action: Allow, protocol: TCP, source: {nets: [192.168.0.0/24]}, destination: {ports: [179]}}
  egress:
    - {action: Allow, protocol: TCP, destination: {ports: [179]}}
""",
    "calico-namespaced": """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: application.crm-web-to-db, namespace: crm}
spec:
  tier: application
  order: 110
  selector: app == 'db'
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web', namespaceSelector: env == 'prod'}
      destination: {ports: [5432]}
  egress:
    - action: Allow
      protocol: UDP
      destination: {selector: k8s-app == 'kube-dns', ports: [53]}
""",
    "cilium-clusterwide-deny": """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: security-no-world-ssh}
spec:
  description: Nobody from outside the cluster reaches SSH on any pod
  endpointSelector: {}
  ingressDeny:
    - fromEntities: [world]
      toPorts:
        - ports:
            - {port: "22", protocol: TCP}
            - {port: "2200", endPort: 2299, protocol: ANY}
""",
    "cilium-host-policy": """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-fw}
specs:
  - nodeSelector: {matchLabels: {node-role.kubernetes.io/control-plane: ""}}
    ingress:
      - fromEntities: [cluster, remote-node, health]
      - fromCIDRSet: [{cidrGroupRef: office-networks}]
        toPorts: [{ports: [{port: "6443", protocol: TCP}]}]
  - endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": kube-system}}
    egressDeny:
      - toEntities: [world]
""",
    "cilium-namespaced": """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: crm-db
  namespace: crm
  labels: {app.kubernetes.io/managed-by: microseg}
spec:
  description: prod crm web -> prod crm db on tcp/3306
  endpointSelector:
    matchLabels: {app: db, env: prod}
  enableDefaultDeny: {ingress: true, egress: false}
  labels: [{key: microseg.io/rule, value: application.web-to-db, source: microseg}]
  ingress:
    - fromEndpoints:
        - matchLabels: {app: web}
          matchExpressions:
            - {key: env, operator: In, values: [prod]}
            - {key: quarantine, operator: DoesNotExist}
      toPorts:
        - ports: [{port: "3306", protocol: TCP}, {port: mysql}]
          rules:
            http: [{method: GET, path: /status, headers: [X-Trace]}]
    - icmps:
        - fields: [{type: 8, family: IPv4}, {type: EchoRequest, family: IPv6}]
  egress:
    - toCIDRSet:
        - {cidr: 10.0.0.0/8, except: [10.96.0.0/12]}
      toPorts: [{ports: [{port: "443"}]}]
    - toCIDR: [192.0.2.0/24, "2001:db8::/64"]
    - toEntities: [kube-apiserver]
    - toFQDNs: [{matchName: api.example.com}, {matchPattern: "*.example.org"}]
      toPorts:
        - ports: [{port: "53", protocol: UDP}]
          rules:
            dns: [{matchPattern: "*"}]
  egressDeny:
    - toEndpoints: [{matchLabels: {env: dev}}]
""",
}

VALID = {name: yaml.safe_load(text) for name, text in VALID_TEXT.items()}

DELETE = object()
"""A mutation value: remove the field."""


def mutated(example: str, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(VALID[example])
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@pytest.mark.parametrize("name", sorted(VALID))
def test_upstream_style_examples_are_valid(name: str) -> None:
    assert crd_schemas.problems(VALID[name]) == []


MUTATIONS = [
    # Calico: Tier
    pytest.param(
        "calico-tier",
        ("spec", "defaultAction"),
        "Allow",
        "$.spec.defaultAction",
        id="tier-default-action-allow",
    ),
    pytest.param("calico-tier", ("spec", "order"), "100", "$.spec.order", id="tier-order-as-text"),
    pytest.param("calico-tier", ("spec",), DELETE, "'spec' is a required property", id="tier-without-spec"),
    pytest.param(
        "calico-tier", ("metadata", "name"), "security.tier", "$.metadata.name", id="tier-name-with-dot"
    ),
    pytest.param(
        "calico-default-tier",
        ("spec", "defaultAction"),
        "Pass",
        "$.spec.defaultAction",
        id="default-tier-must-deny",
    ),
    # Calico: GlobalNetworkPolicy
    pytest.param(
        "calico-quarantine", ("spec", "ingres"), [], "'ingres' was unexpected", id="gnp-unknown-spec-field"
    ),
    pytest.param(
        "calico-quarantine",
        ("spec", "ingress", 0, "action"),
        "Drop",
        "$.spec.ingress[0].action",
        id="gnp-wrong-action",
    ),
    pytest.param(
        "calico-quarantine",
        ("spec", "ingress", 0, "action"),
        "deny",
        "$.spec.ingress[0].action",
        id="gnp-lowercase-action",
    ),
    pytest.param(
        "calico-quarantine",
        ("spec", "ingress", 0, "action"),
        DELETE,
        "'action' is a required property",
        id="gnp-rule-without-action",
    ),
    pytest.param("calico-quarantine", ("spec", "order"), "10", "$.spec.order", id="gnp-order-as-text"),
    pytest.param("calico-quarantine", ("spec", "types"), ["Ingres"], "$.spec.types[0]", id="gnp-bad-type"),
    pytest.param("calico-quarantine", ("spec", "types"), [], "$.spec.types", id="gnp-no-types"),
    pytest.param(
        "calico-quarantine", ("spec", "tier"), "Security", "$.spec.tier", id="gnp-tier-not-a-dns-label"
    ),
    pytest.param(
        "calico-quarantine", ("metadata", "name"), "a.b.c", "$.metadata.name", id="gnp-name-with-two-dots"
    ),
    pytest.param(
        "calico-quarantine",
        ("metadata", "namespace"),
        "crm",
        "'namespace' was unexpected",
        id="gnp-with-namespace",
    ),
    pytest.param(
        "calico-quarantine",
        ("metadata", "labels"),
        {"app": "a b"},
        "$.metadata.labels.app",
        id="gnp-bad-label-value",
    ),
    pytest.param("calico-quarantine", ("status",), {}, "'status' was unexpected", id="gnp-with-status"),
    pytest.param(
        "calico-quarantine",
        ("apiVersion",),
        "crd.projectcalico.org/v1",
        "unknown apiVersion/kind",
        id="calico-v1-api",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "protocol"),
        "tcp",
        "$.spec.ingress[2].protocol",
        id="gnp-lowercase-protocol",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "protocol"),
        "HTTP",
        "$.spec.ingress[2].protocol",
        id="gnp-unknown-protocol",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 3, "protocol"),
        0,
        "$.spec.ingress[3].protocol",
        id="gnp-protocol-zero",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "protocol"),
        DELETE,
        "'protocol' is a required property",
        id="gnp-ports-without-protocol",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "protocol"),
        "ICMP",
        "$.spec.ingress[2].protocol",
        id="gnp-ports-with-icmp",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "destination", "ports", 1),
        "8000-8100",
        "$.spec.ingress[2].destination.ports[1]",
        id="gnp-range-with-dash",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "destination", "ports", 0),
        70000,
        "$.spec.ingress[2].destination.ports[0]",
        id="gnp-port-too-big",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "destination", "port"),
        [80],
        "'port' was unexpected",
        id="gnp-entity-rule-typo",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "source", "nets", 0),
        "10.77.0.0/33",
        "$.spec.ingress[2].source.nets[0]",
        id="gnp-bad-cidr",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 2, "source", "selector"),
        "global()",
        "$.spec.ingress[2].source.selector",
        id="gnp-global-outside-namespace-selector",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 4, "protocol"),
        "TCP",
        "$.spec.ingress[4].protocol",
        id="gnp-icmp-fields-without-icmp",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 4, "ipVersion"),
        6,
        "$.spec.ingress[4].ipVersion",
        id="gnp-icmp-on-ipv6",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 4, "icmp"),
        {"code": 0},
        "'type' is a dependency of 'code'",
        id="gnp-icmp-code-without-type",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 4, "icmp", "type"),
        255,
        "$.spec.ingress[4].icmp.type",
        id="gnp-icmp-type-255",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 6, "destination", "ports"),
        [443],
        "$.spec.ingress[6].destination.ports",
        id="gnp-services-with-ports",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 6, "destination", "serviceAccounts"),
        {"names": ["web"]},
        "services cannot be combined with serviceAccounts",
        id="gnp-services-with-service-accounts",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 7, "action"),
        "Deny",
        "$.spec.ingress[7].action",
        id="gnp-http-on-deny",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "ingress", 7, "http", "paths", 0),
        {"prefix": "api"},
        "$.spec.ingress[7].http.paths[0]",
        id="gnp-http-path-without-slash",
    ),
    pytest.param(
        "calico-guard-rails",
        ("spec", "performanceHints"),
        ["AssumeNotNeeded"],
        "$.spec.performanceHints[0]",
        id="gnp-bad-hint",
    ),
    pytest.param(
        "calico-host-untracked",
        ("spec", "applyOnForward"),
        DELETE,
        "'applyOnForward' is a required property",
        id="gnp-untracked-without-forward",
    ),
    pytest.param(
        "calico-host-untracked",
        ("spec", "preDNAT"),
        True,
        "preDNAT and doNotTrack cannot both be true",
        id="gnp-untracked-and-prednat",
    ),
    pytest.param(
        "calico-host-untracked",
        ("spec", "doNotTrack"),
        "yes",
        "$.spec.doNotTrack",
        id="gnp-do-not-track-as-text",
    ),
    # Calico: NetworkPolicy
    pytest.param(
        "calico-namespaced",
        ("metadata", "namespace"),
        DELETE,
        "'namespace' is a required property",
        id="np-without-namespace",
    ),
    pytest.param(
        "calico-namespaced",
        ("spec", "doNotTrack"),
        True,
        "'doNotTrack' was unexpected",
        id="np-with-global-only-field",
    ),
    pytest.param(
        "calico-namespaced",
        ("spec", "ingress", 0, "source", "namespaceSelectr"),
        "x",
        "'namespaceSelectr' was unexpected",
        id="np-entity-typo",
    ),
    pytest.param(
        "calico-namespaced",
        ("kind",),
        "KubernetesNetworkPolicy",
        "unknown apiVersion/kind",
        id="np-unknown-kind",
    ),
    # Cilium: clusterwide
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "fromEntities", 0),
        "internet",
        "$.spec.ingressDeny[0].fromEntities[0]",
        id="ccnp-unknown-entity",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 0, "protocol"),
        "ICMP",
        "$.spec.ingressDeny[0].toPorts[0].ports[0].protocol",
        id="ccnp-icmp-in-to-ports",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 0, "protocol"),
        "tcp",
        "$.spec.ingressDeny[0].toPorts[0].ports[0].protocol",
        id="ccnp-lowercase-protocol",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 0, "port"),
        22,
        "$.spec.ingressDeny[0].toPorts[0].ports[0].port",
        id="ccnp-port-as-number",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 0, "port"),
        "70000",
        "$.spec.ingressDeny[0].toPorts[0].ports[0].port",
        id="ccnp-port-too-big",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 0, "port"),
        "22/tcp",
        "$.spec.ingressDeny[0].toPorts[0].ports[0].port",
        id="ccnp-port-with-protocol",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "ports", 1, "endPort"),
        70000,
        "$.spec.ingressDeny[0].toPorts[0].ports[1].endPort",
        id="ccnp-end-port-too-big",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "toPorts", 0, "rules"),
        {"http": [{}]},
        "'rules' was unexpected",
        id="ccnp-l7-rules-on-deny",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "fromEntity"),
        ["world"],
        "'fromEntity' was unexpected",
        id="ccnp-rule-typo",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny", 0, "authentication"),
        {"mode": "required"},
        "'authentication' was unexpected",
        id="ccnp-authentication-on-deny",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "ingressDeny"),
        DELETE,
        "$.spec: needs at least one of ingress, ingressDeny, egress, egressDeny",
        id="ccnp-no-rules",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "endpointSelector"),
        DELETE,
        "$.spec: needs exactly one of endpointSelector, nodeSelector",
        id="ccnp-no-selector",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "nodeSelector"),
        {},
        "$.spec: needs exactly one of endpointSelector, nodeSelector",
        id="ccnp-both-selectors",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec", "enableDefaultDeny"),
        {"ingress": "yes"},
        "$.spec.enableDefaultDeny.ingress",
        id="ccnp-default-deny-as-text",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("spec",),
        DELETE,
        "$: needs at least one of spec, specs",
        id="ccnp-no-spec",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("metadata", "namespace"),
        "crm",
        "'namespace' was unexpected",
        id="ccnp-with-namespace",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("metadata", "name"),
        DELETE,
        "'name' is a required property",
        id="ccnp-without-name",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("metadata", "name"),
        "Security_No_SSH",
        "$.metadata.name",
        id="ccnp-name-not-dns",
    ),
    pytest.param(
        "cilium-clusterwide-deny",
        ("apiVersion",),
        "cilium.io/v2alpha1",
        "unknown apiVersion/kind",
        id="cilium-v2alpha1-api",
    ),
    pytest.param(
        "cilium-host-policy", ("specs", 1, "nodeSelector"), {}, "$.specs[1]", id="ccnp-specs-both-selectors"
    ),
    pytest.param(
        "cilium-host-policy",
        ("specs", 0, "ingress", 1, "fromCIDRSet", 0, "cidr"),
        "10.0.0.0/8",
        "$.specs[0].ingress[1].fromCIDRSet[0]",
        id="ccnp-cidr-and-group-ref",
    ),
    pytest.param("cilium-host-policy", ("specs",), [], "$.specs", id="ccnp-empty-specs"),
    # Cilium: namespaced
    pytest.param(
        "cilium-namespaced",
        ("metadata", "namespace"),
        DELETE,
        "'namespace' is a required property",
        id="cnp-without-namespace",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "nodeSelector"),
        {},
        "$.spec: nodeSelector can only be used in CiliumClusterwide",
        id="cnp-node-selector",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "endpointSelector", "matchLabel"),
        {},
        "'matchLabel' was unexpected",
        id="cnp-selector-typo",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "endpointSelector", "matchLabels", "app"),
        "db!",
        "$.spec.endpointSelector.matchLabels.app",
        id="cnp-bad-label-value",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 0, "fromEndpoints", 0, "matchExpressions", 0, "operator"),
        "Equals",
        "$.spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
        id="cnp-bad-operator",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 0, "fromEndpoints", 0, "matchExpressions", 0, "values"),
        [],
        "$.spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
        id="cnp-in-without-values",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 0, "fromEndpoints", 0, "matchExpressions", 1, "key"),
        DELETE,
        "'key' is a required property",
        id="cnp-expression-without-key",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 0, "toPorts", 0, "rules", "kafka"),
        [],
        "'kafka' was unexpected",
        id="cnp-unknown-l7",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 1, "icmps", 0, "fields", 0, "type"),
        256,
        "$.spec.ingress[1].icmps[0].fields[0].type",
        id="cnp-icmp-type-too-big",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 1, "icmps", 0, "fields", 1, "type"),
        "Ping",
        "$.spec.ingress[1].icmps[0].fields[1].type",
        id="cnp-icmp-unknown-name",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 1, "icmps", 0, "fields", 0, "family"),
        "IPv5",
        "$.spec.ingress[1].icmps[0].fields[0].family",
        id="cnp-icmp-bad-family",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "ingress", 1, "icmps", 0, "fields", 0, "type"),
        DELETE,
        "'type' is a required property",
        id="cnp-icmp-without-type",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 0, "toCIDRSet", 0, "cidr"),
        "10.0.0.1",
        "$.spec.egress[0].toCIDRSet[0].cidr",
        id="cnp-cidr-without-prefix",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 0, "toCIDRSet", 0, "except", 0),
        "10.96.0.0/40",
        "$.spec.egress[0].toCIDRSet[0].except[0]",
        id="cnp-bad-except",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 0, "toCIDRSet", 0, "exceptions"),
        [],
        "'exceptions' was unexpected",
        id="cnp-cidr-rule-typo",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 1, "toCIDR", 0),
        "not-a-network",
        "$.spec.egress[1].toCIDR[0]",
        id="cnp-bad-to-cidr",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 3, "toFQDNs", 0, "matchName"),
        "bad name!",
        "$.spec.egress[3].toFQDNs[0]",
        id="cnp-bad-fqdn",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egressDeny", 0, "toFQDNs"),
        [{"matchName": "a.example"}],
        "'toFQDNs' was unexpected",
        id="cnp-fqdn-on-deny",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "egress", 2, "toRequires"),
        ["x"],
        "$.spec.egress[2].toRequires",
        id="cnp-deprecated-requires",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "labels", 0, "key"),
        DELETE,
        "'key' is a required property",
        id="cnp-label-without-key",
    ),
    pytest.param(
        "cilium-namespaced",
        ("spec", "description"),
        ["a"],
        "$.spec.description",
        id="cnp-description-not-text",
    ),
]


@pytest.mark.parametrize(("example", "path", "value", "expected"), MUTATIONS)
def test_each_mistake_is_a_problem_naming_where(
    example: str, path: tuple[str | int, ...], value: Any, expected: str
) -> None:
    found = crd_schemas.problems(mutated(example, path, value))
    assert found, f"{example} with {path} = {value!r} passed"
    assert any(expected in p for p in found), found


def test_problems_read_as_path_then_message() -> None:
    found = crd_schemas.problems(mutated("calico-quarantine", ("spec", "ingress", 0, "action"), "Drop"))
    assert found == ["$.spec.ingress[0].action: 'Drop' is not one of ['Allow', 'Deny', 'Log', 'Pass']"]


def test_anything_but_a_known_kind_is_a_problem() -> None:
    assert crd_schemas.problems({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"})[
        0
    ].startswith("$: unknown apiVersion/kind 'networking.k8s.io/v1' 'NetworkPolicy'")
    assert crd_schemas.problems({}) and crd_schemas.problems([])  # type: ignore[arg-type]
