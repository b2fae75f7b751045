"""An independent evaluator of Calico (`projectcalico.org/v3`) Tier, GlobalNetworkPolicy and
NetworkPolicy manifests: would Calico let `src` open a new connection to `dst` on `port/protocol`?

Fed by exported manifests (read back from YAML) and the cluster they were exported for; feeds the
export proofs in tests/k8s/test_export_calico_cilium.py. It is written from the upstream
documentation, not from microseg's exporter, so that the two can disagree:

- Tiers run by `order` (none = last; the `default` tier is 1,000,000), ties by name. A tier is
  skipped when none of its policies applies to the endpoint in that direction; otherwise its
  policies run by `order` (none = last, then name) and their rules in order: Allow and Deny end
  evaluation, Pass jumps to the next tier, Log continues. A tier that applies but takes no action
  does its `defaultAction` (Deny unless Pass). After the last tier (passed, or none applied) the
  endpoint's Kubernetes profile `kns.<namespace>` allows.
  https://docs.tigera.io/calico/latest/reference/resources/tier ("How policy is evaluated"),
  https://docs.tigera.io/calico/latest/network-policy/policy-tiers/tiered-policy ("Policy endpoint
  matching across tiers"), projectcalico/calico libcalico-go converter NamespaceToProfile
  (profile rules Ingress [Allow], Egress [Allow]).
- `types` defaults: Egress alone when only egress rules are present, else Ingress (plus Egress
  when both are present). https://docs.tigera.io/calico/latest/reference/resources/globalnetworkpolicy
- Scope of selectors: a NetworkPolicy selects endpoints of its own namespace; an entity rule's
  `selector` without `namespaceSelector` means the policy's namespace (NetworkPolicy) or every
  namespace (GlobalNetworkPolicy); a present `namespaceSelector` selects namespaces by their labels
  (plus `projectcalico.org/name`) and limits the `selector` to them.
  https://docs.tigera.io/calico/latest/network-policy/get-started/calico-policy/calico-labels and
  the "selector scopes" section of the policy references.
- Endpoint labels: the pod's labels, `projectcalico.org/namespace`, `projectcalico.org/orchestrator:
  k8s`, `projectcalico.org/serviceaccount` and the namespace's labels as `pcns.<key>` (inherited
  from the namespace profile's labelsToApply).
- Entity rules AND their criteria; `nets` match the packet's address, pods included.

A connection is allowed when the source's egress and the destination's ingress both allow it.

What it deliberately does not do: anything it does not model (service accounts selectors other
than all(), Services, HTTP, source ports, host endpoints, doNotTrack/preDNAT) raises UnsupportedError
rather than guessing; an invalid manifest (ports without a port protocol, an undefined tier)
raises InvalidError.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from microseg.k8s import cluster
from microseg.model import services

API = "projectcalico.org/v3"
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
"""The default tier's fixed order (tiered-policy docs: "has the order of 1,000,000")."""

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}
PORT_PROTOCOLS = {6, 17, 132, 136}
"""Protocols whose rules may name ports (the validator rejects ports with any other protocol)."""

RULE_KEYS = {"action", "protocol", "notProtocol", "icmp", "notICMP", "ipVersion", "source",
             "destination", "metadata", "http"}  # fmt: skip
NOTHING: Mapping[str, Any] = {}
"""An absent source/destination: one shared object, so that caches keyed by identity stay sound."""
ENTITY_KEYS = {"nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts",
               "serviceAccounts", "services"}  # fmt: skip


class InvalidError(ValueError):
    """The manifests are not something Calico would accept."""


class UnsupportedError(NotImplementedError):
    """The manifests use something this evaluator does not model (it never guesses)."""


# --- the selector language -------------------------------------------------------------------

Labels = Mapping[str, str]
Selector = Callable[[Labels], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<lparen>\() | (?P<rparen>\)) | (?P<and>&&) | (?P<or>\|\|) | (?P<ne>!=) | (?P<not>!)
    | (?P<eq>==) | (?P<lbrace>\{) | (?P<rbrace>\}) | (?P<comma>,)
    | (?P<all>all\(\s*\)) | (?P<global>global\(\s*\)) | (?P<has>has\(\s*(?P<haskey>[\w./-]+)\s*\))
    | (?P<notin>not\s+in(?=[\s{])) | (?P<in>in(?=[\s{])) | (?P<contains>contains(?=[\s'"]))
    | (?P<starts>starts\s+with(?=[\s'"])) | (?P<ends>ends\s+with(?=[\s'"]))
    | '(?P<sq>[^']*)' | "(?P<dq>[^"]*)" | (?P<label>[\w./-]+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; strings of either quote style become ("string", value)."""
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidError(f"selector {text!r}: cannot read at {text[pos:]!r}")
        kind = m.lastgroup or ""
        if kind in ("sq", "dq"):
            out.append(("string", m.group(kind)))
        elif kind in ("has", "haskey"):
            out.append(("has", m.group("haskey")))
        else:
            out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent: or := and ('||' and)*; and := unary ('&&' unary)*;
    unary := '!' unary | '(' or ')' | match. Precedence as documented: || < && < ! < ()."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][0] if self.i < len(self.toks) else "end"

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise InvalidError(f"selector {self.text!r}: expected {kind}, found {self.peek()}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self) -> Selector:
        found = self.disjunction()
        if self.peek() != "end":
            raise InvalidError(f"selector {self.text!r}: unexpected {self.peek()}")
        return found

    def disjunction(self) -> Selector:
        parts = [self.conjunction()]
        while self.peek() == "or":
            self.take("or")
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else lambda lbl: any(p(lbl) for p in parts)

    def conjunction(self) -> Selector:
        parts = [self.unary()]
        while self.peek() == "and":
            self.take("and")
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else lambda lbl: all(p(lbl) for p in parts)

    def unary(self) -> Selector:
        if self.peek() == "not":
            self.take("not")
            inner = self.unary()
            return lambda lbl: not inner(lbl)
        if self.peek() == "lparen":
            self.take("lparen")
            inner = self.disjunction()
            self.take("rparen")
            return inner
        return self.match()

    def match(self) -> Selector:
        kind = self.peek()
        if kind == "all":
            self.take("all")
            return lambda lbl: True
        if kind == "global":
            # Matches non-namespaced resources only; pods and namespaces never are.
            self.take("global")
            return lambda lbl: False
        if kind == "has":
            key = self.take("has")
            return lambda lbl: key in lbl
        key = self.take("label")
        return self.comparison(key)

    def comparison(self, key: str) -> Selector:
        op = self.peek()
        if op in ("eq", "ne", "contains", "starts", "ends"):
            self.take(op)
            value = self.take("string")
            tests: dict[str, Callable[[str], bool]] = {
                "eq": lambda v: v == value,
                "contains": lambda v: value in v,
                "starts": lambda v: v.startswith(value),
                "ends": lambda v: v.endswith(value),
            }
            if op == "ne":  # "without label k or with a value other than v"
                return lambda lbl: lbl.get(key) != value
            test = tests[op]
            return lambda lbl: key in lbl and test(lbl[key])
        if op in ("in", "notin"):
            self.take(op)
            values = self.value_set()
            if op == "in":
                return lambda lbl: key in lbl and lbl[key] in values
            return lambda lbl: lbl.get(key) not in values
        raise InvalidError(f"selector {self.text!r}: expected an operator after {key}, found {op}")

    def value_set(self) -> frozenset[str]:
        self.take("lbrace")
        values = set()
        if self.peek() == "string":
            values.add(self.take("string"))
            while self.peek() == "comma":
                self.take("comma")
                values.add(self.take("string"))
        self.take("rbrace")
        return frozenset(values)


@functools.lru_cache(maxsize=4096)
def parse_selector(text: str) -> Selector:
    """A Calico selector expression as a predicate on labels; "" means all()."""
    return _Parser(text).parse() if text.strip() else (lambda lbl: True)


# --- endpoints ------------------------------------------------------------------------------


def endpoint_labels(pod: cluster.Pod, namespace: cluster.Namespace) -> dict[str, str]:
    """The labels Calico's selectors see on a pod's workload endpoint."""
    found = {f"pcns.{k}": v for k, v in namespace_labels(namespace).items()}
    found.update(pod.labels.items())
    found["projectcalico.org/namespace"] = pod.namespace
    found["projectcalico.org/orchestrator"] = "k8s"
    found["projectcalico.org/serviceaccount"] = "default"
    return found


def namespace_labels(namespace: cluster.Namespace) -> dict[str, str]:
    """The labels a `namespaceSelector` sees on a namespace."""
    return {**dict(namespace.labels.items()), "projectcalico.org/name": namespace.name}


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection between two pods."""

    src: cluster.Pod
    dst: cluster.Pod
    port: int
    protocol: services.Protocol

    @property
    def number(self) -> int:
        return PROTOCOL_NUMBERS[self.protocol.value]


# --- policies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    name: str
    order: float
    default_action: str


@dataclass(frozen=True)
class Policy:
    kind: str
    name: str
    namespace: str | None
    """None for a GlobalNetworkPolicy."""
    tier: str
    order: float
    selector: str
    namespace_selector: str
    types: frozenset[str]
    ingress: tuple[Mapping[str, Any], ...]
    egress: tuple[Mapping[str, Any], ...]

    @property
    def sort_key(self) -> tuple[float, str]:
        return self.order, f"{self.namespace}/{self.name}" if self.namespace else self.name

    def rules(self, direction: str) -> tuple[Mapping[str, Any], ...]:
        return self.ingress if direction == "Ingress" else self.egress


def _order(value: Any) -> float:
    return math.inf if value is None else float(value)


def _tier(m: Mapping[str, Any]) -> Tier:
    spec = m.get("spec") or {}
    action = spec.get("defaultAction", "Deny")
    if action not in ("Deny", "Pass"):
        raise InvalidError(f"tier {m['metadata']['name']}: defaultAction {action!r}")
    return Tier(m["metadata"]["name"], _order(spec.get("order")), action)


def _policy(m: Mapping[str, Any]) -> Policy:
    spec, meta = m.get("spec") or {}, m["metadata"]
    ingress, egress = tuple(spec.get("ingress") or ()), tuple(spec.get("egress") or ())
    for flag in ("doNotTrack", "preDNAT", "applyOnForward"):
        if spec.get(flag):
            raise UnsupportedError(f"{meta['name']}: {flag} applies to host endpoints")
    if spec.get("serviceAccountSelector", "all()").strip() not in ("", "all()"):
        raise UnsupportedError(f"{meta['name']}: serviceAccountSelector")
    default_types = (["Ingress"] if ingress or not egress else []) + (["Egress"] if egress else [])
    namespaced = m["kind"] == "NetworkPolicy"
    if namespaced and "namespaceSelector" in spec:
        raise InvalidError(f"{meta['name']}: a NetworkPolicy has no top-level namespaceSelector")
    return Policy(
        kind=m["kind"],
        name=meta["name"],
        namespace=meta.get("namespace", "default") if namespaced else None,
        tier=spec.get("tier") or DEFAULT_TIER,
        order=_order(spec.get("order")),
        selector=spec.get("selector", "") or "",
        namespace_selector=spec.get("namespaceSelector", "") or "",
        types=frozenset(spec.get("types") or default_types),
        ingress=ingress,
        egress=egress,
    )


class Evaluator:
    """The manifests, parsed once, judging many connections."""

    def __init__(self, manifests: Sequence[Mapping[str, Any]], found: cluster.Cluster) -> None:
        self.cluster = found
        tiers = {DEFAULT_TIER: Tier(DEFAULT_TIER, DEFAULT_TIER_ORDER, "Deny")}
        policies = []
        for m in manifests:
            if m.get("apiVersion") != API:
                raise InvalidError(f"not a Calico manifest: {m.get('apiVersion')} {m.get('kind')}")
            if m["kind"] == "Tier":
                tier = _tier(m)
                if tier.name == DEFAULT_TIER and tier.order != DEFAULT_TIER_ORDER:
                    raise InvalidError("the default tier's order is fixed at 1,000,000")
                tiers[tier.name] = tier
            elif m["kind"] in ("GlobalNetworkPolicy", "NetworkPolicy"):
                policies.append(_policy(m))
            else:
                raise InvalidError(f"unexpected kind {m['kind']}")
        for p in policies:
            if p.tier not in tiers:
                raise InvalidError(f"policy {p.name} names tier {p.tier}, which no Tier defines")
        self.tiers = sorted(tiers.values(), key=lambda t: (t.order, t.name))
        self.policies = policies
        # Which policies apply, and who an entity rule's identity part selects, depend on the pods
        # only, not on the port: computed once per pod.
        self._applying: dict[tuple[str, str, str], list[Policy]] = {}
        self._identity: dict[tuple[int, str], bool] = {}

    def allowed(self, src: cluster.Pod, dst: cluster.Pod, port: int, protocol: services.Protocol) -> bool:
        """Whether a new connection from `src` to `dst` on port/protocol gets through."""
        packet = Packet(src, dst, port, protocol)
        return self.direction(packet, "Egress") and self.direction(packet, "Ingress")

    def direction(self, packet: Packet, direction: str) -> bool:
        """The verdict of the local endpoint's policy (the source on egress, the destination on
        ingress): the first tier that decides, else the namespace profile's allow."""
        local = packet.src if direction == "Egress" else packet.dst
        for tier in self.tiers:
            applying = self.applying(tier, direction, local)
            if not applying:
                continue  # a tier with no policy for the endpoint is skipped, default action too
            action = self.tier_action(applying, packet, direction)
            if action == "Allow":
                return True
            if action == "Deny" or (action is None and tier.default_action == "Deny"):
                return False
        return True

    def applying(self, tier: Tier, direction: str, pod: cluster.Pod) -> list[Policy]:
        """The tier's policies that apply to the pod in this direction, in evaluation order."""
        key = (tier.name, direction, pod.ref)
        if key not in self._applying:
            self._applying[key] = sorted(
                (p for p in self.policies
                 if p.tier == tier.name and direction in p.types and self.applies(p, pod)),
                key=lambda p: p.sort_key,
            )  # fmt: skip
        return self._applying[key]

    def tier_action(self, applying: list[Policy], packet: Packet, direction: str) -> str | None:
        """Allow, Deny or Pass from the first matching rule; None when no rule matches."""
        for policy in applying:
            for rule in policy.rules(direction):
                if not self.rule_matches(policy, rule, packet):
                    continue
                action = rule.get("action")
                if action == "Log":
                    continue
                if action not in ("Allow", "Deny", "Pass"):
                    raise InvalidError(f"{policy.name}: action {action!r}")
                return str(action)
        return None

    def applies(self, policy: Policy, pod: cluster.Pod) -> bool:
        """Whether the policy's top-level selection includes the pod's endpoint."""
        namespace = self.cluster.namespaces[pod.namespace]
        if policy.namespace is not None and policy.namespace != pod.namespace:
            return False
        if not parse_selector(policy.namespace_selector)(namespace_labels(namespace)):
            return False
        return parse_selector(policy.selector)(endpoint_labels(pod, namespace))

    def rule_matches(self, policy: Policy, rule: Mapping[str, Any], packet: Packet) -> bool:
        """All of a rule's criteria hold for the packet."""
        unmodelled = (set(rule) - RULE_KEYS) | ({"http"} & set(rule))
        if unmodelled:
            raise UnsupportedError(f"{policy.name}: rule fields {sorted(unmodelled)}")
        if not _protocol_matches(rule, packet.number):
            return False
        if rule.get("ipVersion") not in (None, packet.dst.ips[0].version):
            return False
        source, destination = rule.get("source") or NOTHING, rule.get("destination") or NOTHING
        if "ports" in source or "notPorts" in source:
            raise UnsupportedError(f"{policy.name}: source ports (a connection's source port is unknown)")
        for side in (source, destination):
            if ("ports" in side or "notPorts" in side) and _protocol_number(
                rule.get("protocol")
            ) not in PORT_PROTOCOLS:
                raise InvalidError(f"{policy.name}: ports need protocol TCP, UDP, SCTP or UDPLite")
        return self.entity_matches(
            policy, source, packet.src, packet, with_port=False
        ) and self.entity_matches(policy, destination, packet.dst, packet, with_port=True)

    def entity_matches(
        self, policy: Policy, entity: Mapping[str, Any], pod: cluster.Pod, packet: Packet, with_port: bool
    ) -> bool:
        """An EntityRule against one end of the packet (its pod, address and, for the destination,
        port)."""
        unmodelled = (set(entity) - ENTITY_KEYS) | ({"serviceAccounts", "services"} & set(entity))
        if unmodelled:
            raise UnsupportedError(f"{policy.name}: entity fields {sorted(unmodelled)}")
        address = pod.ips[0]
        if "nets" in entity and not any(address in _net(n) for n in entity["nets"]):
            return False
        if "notNets" in entity and any(address in _net(n) for n in entity["notNets"]):
            return False
        key = (id(entity), pod.ref)
        if key not in self._identity:
            self._identity[key] = self.identity_matches(policy, entity, pod)
        if not self._identity[key]:
            return False
        if with_port and "ports" in entity and not _ports_match(entity["ports"], pod, packet):
            return False
        return not (with_port and "notPorts" in entity and _ports_match(entity["notPorts"], pod, packet))

    def identity_matches(self, policy: Policy, entity: Mapping[str, Any], pod: cluster.Pod) -> bool:
        """selector / namespaceSelector / notSelector, with the scope rules of the policy's kind."""
        namespace = self.cluster.namespaces[pod.namespace]
        ns_sel = entity.get("namespaceSelector") or ""
        if ns_sel:
            in_scope = parse_selector(ns_sel)(namespace_labels(namespace))
        else:  # no namespaceSelector: the policy's own namespace, or everywhere for a global policy
            in_scope = policy.namespace is None or policy.namespace == pod.namespace
        labels = endpoint_labels(pod, namespace)
        sel = entity.get("selector") or ""
        if (ns_sel or sel) and not (in_scope and parse_selector(sel)(labels)):
            return False
        not_sel = entity.get("notSelector") or ""
        return not (not_sel and in_scope and parse_selector(not_sel)(labels))


def _protocol_number(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    key = str(value).lower()
    if key not in PROTOCOL_NUMBERS:
        raise InvalidError(f"protocol {value!r}")
    return PROTOCOL_NUMBERS[key]


def _protocol_matches(rule: Mapping[str, Any], number: int) -> bool:
    wanted, unwanted = _protocol_number(rule.get("protocol")), _protocol_number(rule.get("notProtocol"))
    return wanted in (None, number) and unwanted != number


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _ports_match(ports: Sequence[Any], pod: cluster.Pod, packet: Packet) -> bool:
    """Ports as Calico writes them: 80, "80", "1000:2000", or a named port of the pod."""
    for port in ports:
        text = str(port)
        if text.isdigit():
            if int(text) == packet.port:
                return True
        elif re.fullmatch(r"\d+:\d+", text):
            first, last = (int(x) for x in text.split(":"))
            if first > last:
                raise InvalidError(f"port range {text}")
            if first <= packet.port <= last:
                return True
        elif pod.named_port(text, packet.protocol) == packet.port:
            return True
    return False


def allowed(
    manifests: Sequence[Mapping[str, Any]],
    found: cluster.Cluster,
    src: cluster.Pod,
    dst: cluster.Pod,
    port: int,
    protocol: services.Protocol,
) -> bool:
    """Whether Calico, running `manifests` in `found`, lets `src` open a connection to `dst`."""
    return Evaluator(manifests, found).allowed(src, dst, port, protocol)
