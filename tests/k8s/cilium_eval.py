"""An independent evaluator of Cilium (`cilium.io/v2`) CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy manifests: would Cilium let `src` open a new connection to `dst` on
`port/protocol`?

Fed by exported manifests (read back from YAML) and the cluster they were exported for; feeds the
export proofs in tests/k8s/test_export_calico_cilium.py. Written from the upstream documentation
and, where the documentation is silent or stale, the code that implements it:

- Endpoint identity labels of a pod: its labels with source `k8s` (minus the default
  identity-irrelevant ones such as `pod-template-hash`), `k8s:io.kubernetes.pod.namespace`,
  `k8s:io.cilium.k8s.namespace.labels.<key>` per namespace label, the service account and cluster.
  A selector key without a source (`app`) matches any source.
  https://docs.cilium.io/en/latest/operations/performance/scalability/identity-relevant-labels/
- Namespaces: a CNP's endpointSelector always gets `k8s:io.kubernetes.pod.namespace=<its
  namespace>`; its from/toEndpoints get it too unless they name the namespace key or a namespace
  label key (`io.cilium.k8s.namespace.labels.*`). A CCNP's peer selectors only require that some
  namespace exists (Cilium-managed pods). cilium/cilium pkg/k8s/apis/cilium.io/utils/utils.go
  getEndpointSelector and ParseToCiliumRule; https://docs.cilium.io/en/latest/security/policy/kubernetes/
  (whose "namespace labels are ignored in a CNP" predates the fix of cilium/cilium#30149, see
  cilium/cilium#44532; `legacy_cnp_namespace_labels=True` evaluates the old behaviour).
- Default deny per direction: an endpoint selected by a rule that has an `ingress` or `ingressDeny`
  section (likewise egress) is enforced in that direction; it is default-deny unless every such rule
  sets `enableDefaultDeny.<direction>: false`, in which case everything not denied is allowed.
  An empty section (`ingress: []`) does not count. https://docs.cilium.io/en/latest/security/policy/intro/
  ("Endpoint default policy"), pkg/policy/repository.go.
- Deny rules win over every allow rule. https://docs.cilium.io/en/latest/security/policy/deny/
- An ingress/egress rule matches when its L3 peers (one kind per rule; absent = every peer; a
  present empty list = none) and its L4 `toPorts` (absent = every port) both match, so
  `ingress: [{}]` allows everything. pkg/policy/utils RulesToPolicyEntries / mergeEndpointSelectors.
- Entities: `all` and `cluster` include every pod; `world` and the node/host entities none.
  https://docs.cilium.io/en/latest/security/policy/language/ (Entities based)
- CIDR rules never match pods: "CIDR rules do not apply to traffic where both sides of the
  connection are either managed by Cilium or use an IP belonging to a node in the cluster", "By
  default, CIDR-based selectors do not match in-cluster entities (pods or nodes)". Same page (IP/CIDR
  based, Selecting nodes with CIDR / ipBlock).
- toPorts: `port` as a string ("0" = every port) or a named port of the destination pod, `endPort`
  for ranges, `protocol` TCP/UDP/SCTP/ANY (absent = ANY).

A connection is allowed when the source's egress and the destination's ingress both allow it.

What it deliberately does not do: L7 rules, FQDNs, Services, CIDR groups, fromRequires, node
selectors for pods' peers; anything unmodelled raises UnsupportedError instead of guessing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from microseg.k8s import cluster
from microseg.model import services

API = "cilium.io/v2"
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels"

IRRELEVANT_LABELS = re.compile(
    r"io\.kubernetes|kubernetes\.io|statefulset\.kubernetes\.io/pod-name|apps\.kubernetes\.io/pod-index"
    r"|batch\.kubernetes\.io/job-completion-index|batch\.kubernetes\.io/controller-uid|beta\.kubernetes\.io"
    r"|k8s\.io|pod-template-generation|pod-template-hash|controller-revision-hash|annotation|controller-uid"
    r"|etcd_node"
)
"""The default exclusive label patterns (anchored at the start of the key): such pod labels are
not part of the identity, so no selector can see them."""

POD_ENTITIES = {"all", "cluster"}
OTHER_ENTITIES = {"world", "world-ipv4", "world-ipv6", "host", "remote-node", "kube-apiserver", "init",
                  "health", "unmanaged", "ingress", "none"}  # fmt: skip

INGRESS_L3 = ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "fromNodes")
EGRESS_L3 = ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toNodes")
UNMODELLED = {
    "fromRequires",
    "toRequires",
    "fromGroups",
    "toGroups",
    "toServices",
    "toFQDNs",
    "authentication",
}
PORT_PROTOCOLS = {"TCP", "UDP", "SCTP", "ANY"}
SPEC_KEYS = {"endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress", "egressDeny",
             "enableDefaultDeny", "description", "labels", "log"}  # fmt: skip


class InvalidError(ValueError):
    """The manifests are not something Cilium would accept."""


class UnsupportedError(NotImplementedError):
    """The manifests use something this evaluator does not model (it never guesses)."""


# --- labels and selectors -------------------------------------------------------------------

IdentityLabels = Mapping[tuple[str, str], str]
"""(source, key) -> value."""


def identity_labels(pod: cluster.Pod, namespace: cluster.Namespace) -> dict[tuple[str, str], str]:
    """The security identity's labels of a pod's endpoint."""
    found = {("k8s", k): v for k, v in pod.labels.items() if not IRRELEVANT_LABELS.match(k)}
    found[("k8s", NAMESPACE_KEY)] = pod.namespace
    for key, value in namespace.labels.items():
        found[("k8s", f"{NAMESPACE_LABELS_PREFIX}.{key}")] = value
    found[("k8s", "io.cilium.k8s.policy.serviceaccount")] = "default"
    found[("k8s", "io.cilium.k8s.policy.cluster")] = "default"
    return found


def split_key(key: str) -> tuple[str, str]:
    """`k8s:app` -> (k8s, app); a key without a source matches any source."""
    source, sep, rest = key.partition(":")
    return (source, rest) if sep else ("any", key)


def _values(labels: IdentityLabels, key: str) -> list[str]:
    source, name = split_key(key)
    return [v for (s, k), v in labels.items() if k == name and source in ("any", s)]


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()
    from_match_labels: bool = False

    def matches(self, labels: IdentityLabels) -> bool:
        found = _values(labels, self.key)
        if self.operator == "In":
            return any(v in self.values for v in found)
        if self.operator == "NotIn":
            return not any(v in self.values for v in found)
        if self.operator == "Exists":
            return bool(found)
        if self.operator == "DoesNotExist":
            return not found
        raise InvalidError(f"operator {self.operator!r}")


@dataclass(frozen=True)
class EndpointSelector:
    """A Kubernetes label selector over identity labels, keys normalized to `source:key`."""

    requirements: tuple[Requirement, ...]

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> EndpointSelector:
        raw = raw or {}
        if set(raw) - {"matchLabels", "matchExpressions"}:
            raise InvalidError(f"selector fields {sorted(raw)}")
        reqs = [
            Requirement(_normal(k), "In", frozenset([str(v)]), True)
            for k, v in (raw.get("matchLabels") or {}).items()
        ]
        for e in raw.get("matchExpressions") or ():
            reqs.append(Requirement(_normal(e["key"]), e["operator"], frozenset(e.get("values") or ())))
        return cls(tuple(reqs))

    def matches(self, labels: IdentityLabels) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def has_key(self, *keys: str) -> bool:
        return any(r.key in keys for r in self.requirements)

    def has_key_prefix(self, *prefixes: str) -> bool:
        return any(r.key.startswith(p) for r in self.requirements for p in prefixes)

    def with_namespace(self, namespace: str) -> EndpointSelector:
        """AddMatch(k8s:io.kubernetes.pod.namespace, namespace): replaces an equal key."""
        key = f"k8s:{NAMESPACE_KEY}"
        kept = tuple(r for r in self.requirements if not (r.key == key and r.from_match_labels))
        return EndpointSelector((*kept, Requirement(key, "In", frozenset([namespace]), True)))


def _normal(key: str) -> str:
    source, name = split_key(key)
    return f"{source}:{name}"


def peer_selector(raw: Mapping[str, Any] | None, namespace: str | None, legacy: bool) -> EndpointSelector:
    """A from/toEndpoints selector as getEndpointSelector rewrites it for a CNP (`namespace`) or a
    CCNP (None)."""
    es = EndpointSelector.of(raw)
    if es.has_key_prefix("reserved:") or es.has_key(f"k8s:{NAMESPACE_KEY}", f"any:{NAMESPACE_KEY}"):
        return es
    if namespace is None:  # a clusterwide policy: any Cilium-managed pod, whatever its namespace
        return EndpointSelector((*es.requirements, Requirement(f"k8s:{NAMESPACE_KEY}", "Exists")))
    if not legacy and es.has_key_prefix(f"k8s:{NAMESPACE_LABELS_PREFIX}", f"any:{NAMESPACE_LABELS_PREFIX}"):
        return es
    return es.with_namespace(namespace)


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    src: cluster.Pod
    dst: cluster.Pod
    port: int
    protocol: services.Protocol


@dataclass(frozen=True)
class Rule:
    """One rule (a `spec` or an element of `specs`) of a policy."""

    name: str
    namespace: str | None
    subject: EndpointSelector | None
    """None for a nodeSelector rule, which selects no pod."""
    sections: Mapping[str, tuple[Mapping[str, Any], ...]]
    """ingress, ingressDeny, egress, egressDeny: only those present and non-empty."""
    default_deny: Mapping[str, bool]
    """Ingress/Egress -> enableDefaultDeny as given (absent = True)."""


def _rules(m: Mapping[str, Any]) -> list[Rule]:
    meta = m["metadata"]
    namespace = meta.get("namespace", "default") if m["kind"] == "CiliumNetworkPolicy" else None
    specs = ([m["spec"]] if m.get("spec") else []) + list(m.get("specs") or ())
    if not specs:
        raise InvalidError(f"{meta['name']}: neither spec nor specs")
    return [_rule(meta["name"], namespace, spec) for spec in specs]


def _rule(name: str, namespace: str | None, spec: Mapping[str, Any]) -> Rule:
    if set(spec) - SPEC_KEYS:
        raise UnsupportedError(f"{name}: spec fields {sorted(set(spec) - SPEC_KEYS)}")
    if ("endpointSelector" in spec) == ("nodeSelector" in spec):
        raise InvalidError(f"{name}: exactly one of endpointSelector and nodeSelector")
    subject = None
    if "endpointSelector" in spec:
        subject = EndpointSelector.of(spec["endpointSelector"])
        if namespace is not None:
            subject = subject.with_namespace(namespace)
    sections = {k: tuple(spec[k]) for k in ("ingress", "ingressDeny", "egress", "egressDeny") if spec.get(k)}
    raw = spec.get("enableDefaultDeny") or {}
    default_deny = {
        "Ingress": raw.get("ingress", True) is not False,
        "Egress": raw.get("egress", True) is not False,
    }
    return Rule(name, namespace, subject, sections, default_deny)


class Evaluator:
    """The manifests, parsed once, judging many connections."""

    def __init__(
        self,
        manifests: Sequence[Mapping[str, Any]],
        found: cluster.Cluster,
        legacy_cnp_namespace_labels: bool = False,
    ) -> None:
        self.cluster = found
        self.legacy = legacy_cnp_namespace_labels
        self.rules: list[Rule] = []
        # Labels, selection and L3 matches depend on the pods only, not on the port.
        self._labels: dict[str, dict[tuple[str, str], str]] = {}
        self._enforcing: dict[tuple[str, str], list[Rule]] = {}
        self._l3: dict[tuple[int, str], bool] = {}
        for m in manifests:
            if m.get("apiVersion") != API or m.get("kind") not in (
                "CiliumNetworkPolicy",
                "CiliumClusterwideNetworkPolicy",
            ):
                raise InvalidError(f"not a Cilium policy: {m.get('apiVersion')} {m.get('kind')}")
            self.rules.extend(_rules(m))

    def allowed(self, src: cluster.Pod, dst: cluster.Pod, port: int, protocol: services.Protocol) -> bool:
        """Whether a new connection from `src` to `dst` on port/protocol gets through."""
        packet = Packet(src, dst, port, protocol)
        return self.direction(packet, "Egress") and self.direction(packet, "Ingress")

    def labels(self, pod: cluster.Pod) -> dict[tuple[str, str], str]:
        if pod.ref not in self._labels:
            self._labels[pod.ref] = identity_labels(pod, self.cluster.namespaces[pod.namespace])
        return self._labels[pod.ref]

    def enforcing(self, pod: cluster.Pod, direction: str) -> list[Rule]:
        """The rules that select the pod and have a section for this direction."""
        key = (pod.ref, direction)
        if key not in self._enforcing:
            labels = self.labels(pod)
            names = ("egress", "egressDeny") if direction == "Egress" else ("ingress", "ingressDeny")
            self._enforcing[key] = [
                r for r in self.rules
                if r.subject is not None and r.subject.matches(labels) and any(n in r.sections for n in names)
            ]  # fmt: skip
        return self._enforcing[key]

    def direction(self, packet: Packet, direction: str) -> bool:
        """The local endpoint's verdict: not enforced -> allow; a matching deny -> deny; default
        deny -> some allow must match; only non-default-deny rules -> allow."""
        local, remote = (packet.src, packet.dst) if direction == "Egress" else (packet.dst, packet.src)
        allow_key, deny_key = (
            ("egress", "egressDeny") if direction == "Egress" else ("ingress", "ingressDeny")
        )
        enforcing = self.enforcing(local, direction)
        if not enforcing:
            return True
        peer = self.labels(remote)
        if any(
            self.matches(r, s, peer, remote, packet, direction)
            for r in enforcing
            for s in r.sections.get(deny_key, ())
        ):
            return False
        if not any(r.default_deny[direction] for r in enforcing):
            return True
        return any(
            self.matches(r, s, peer, remote, packet, direction)
            for r in enforcing
            for s in r.sections.get(allow_key, ())
        )

    def matches(
        self,
        rule: Rule,
        section: Mapping[str, Any],
        peer: IdentityLabels,
        remote: cluster.Pod,
        packet: Packet,
        direction: str,
    ) -> bool:
        """One ingress/egress (deny) rule: its L3 peers and its L4 ports both match."""
        l3_keys = INGRESS_L3 if direction == "Ingress" else EGRESS_L3
        unknown = set(section) - set(l3_keys) - {"toPorts", "icmps"}
        if unknown:
            raise UnsupportedError(f"{rule.name}: rule fields {sorted(unknown)}")
        key = (id(section), remote.ref)
        if key not in self._l3:
            self._l3[key] = self.l3_matches(rule, section, l3_keys, peer, remote)
        return self._l3[key] and _l4_matches(rule, section, packet)

    def l3_matches(
        self,
        rule: Rule,
        section: Mapping[str, Any],
        l3_keys: tuple[str, ...],
        peer: IdentityLabels,
        remote: cluster.Pod,
    ) -> bool:
        present = [k for k in l3_keys if k in section]
        if not present:
            return True  # no L3 constraint: every peer
        if any(not section[k] for k in present):
            return False  # an explicit empty list selects no identity
        if len(present) > 1:
            raise InvalidError(f"{rule.name}: combining {' and '.join(present)} in one rule")
        kind, peers = present[0], section[present[0]]
        if kind.endswith("Endpoints"):
            return any(peer_selector(p, rule.namespace, self.legacy).matches(peer) for p in peers)
        if kind.endswith("Entities"):
            return any(_entity_matches(e) for e in peers)
        if kind.endswith("CIDR") or kind.endswith("CIDRSet"):
            _check_cidrs(rule, kind, peers)
            return False  # CIDR rules never apply between Cilium-managed pods
        return False  # fromNodes / toNodes select nodes, never pods


def _entity_matches(entity: str) -> bool:
    if entity in POD_ENTITIES:
        return True
    if entity in OTHER_ENTITIES:
        return False
    raise InvalidError(f"unknown entity {entity!r}")


def _check_cidrs(rule: Rule, kind: str, peers: Sequence[Any]) -> None:
    for p in peers:
        if isinstance(p, Mapping):
            if "cidrGroupRef" in p or "cidrGroupSelector" in p:
                raise UnsupportedError(f"{rule.name}: CIDR groups")
            outer = ipaddress.ip_network(p["cidr"], strict=False)
            for inner in p.get("except") or ():
                if not ipaddress.ip_network(inner, strict=False).subnet_of(outer):  # type: ignore[arg-type]
                    raise InvalidError(f"{rule.name}: {kind} except {inner} outside {outer}")
        else:
            ipaddress.ip_network(p, strict=False)


def _l4_matches(rule: Rule, section: Mapping[str, Any], packet: Packet) -> bool:
    port_rules = section.get("toPorts") or ()
    if not port_rules:
        return not section.get("icmps")  # ICMP-only rules never match TCP, UDP or SCTP
    return any(_port_rule_matches(rule, pr, packet) for pr in port_rules)


def _port_rule_matches(rule: Rule, port_rule: Mapping[str, Any], packet: Packet) -> bool:
    if set(port_rule) - {"ports"}:
        raise UnsupportedError(f"{rule.name}: toPorts fields {sorted(set(port_rule) - {'ports'})} (L7)")
    if not port_rule.get("ports"):
        raise UnsupportedError(f"{rule.name}: a toPorts entry without ports")
    return any(_port_matches(rule, p, packet) for p in port_rule["ports"])


def _port_matches(rule: Rule, port: Mapping[str, Any], packet: Packet) -> bool:
    protocol = str(port.get("protocol", "ANY")).upper()
    if protocol not in PORT_PROTOCOLS and protocol not in ("ICMP", "ICMPV6", "VRRP", "IGMP"):
        raise InvalidError(f"{rule.name}: protocol {protocol}")
    if protocol != "ANY" and protocol.lower() != packet.protocol.value:
        return False
    text = str(port.get("port", "0") or "0")
    if not text.isdigit():
        named = packet.dst.named_port(text, packet.protocol)
        return named == packet.port
    first, last = int(text), int(port.get("endPort") or text)
    if first == 0:
        return True
    if last < first:
        raise InvalidError(f"{rule.name}: endPort {last} below port {first}")
    return first <= packet.port <= last


def allowed(
    manifests: Sequence[Mapping[str, Any]],
    found: cluster.Cluster,
    src: cluster.Pod,
    dst: cluster.Pod,
    port: int,
    protocol: services.Protocol,
) -> bool:
    """Whether Cilium, running `manifests` in `found`, lets `src` open a connection to `dst`."""
    return Evaluator(manifests, found).allowed(src, dst, port, protocol)
