"""Sets of flows as boxes (sources x destinations x ports), with exact intersection and difference.

Used by the exporters to flatten microseg's ordered tiers (first match, deny, pass) into what a
format without order can say: NetworkPolicy has only additive allows, Cilium has allows plus denies
that always win. "Allow rule A, unless an earlier deny D matched" is the box A minus the box D.

An endpoint set is what one NetworkPolicy peer list can say: pods matching any of some label
conjunctions (`conjs`, over pod labels plus `k8s.namespace` and `k8s.ns.*`, see the importer)
plus every address in some networks (`nets`, which match pods by their IP too, as ipBlocks do).
Label algebra is symbolic, so it holds for pods that do not exist yet. Where labels and addresses
mix (pods matching a selector, minus an address range), the answer depends on which pods hold
which addresses: `Universe` supplies the current pods, and a case no label or address can express
raises InexpressibleError naming the rules involved.

What it deliberately does not do: know rules or formats (`microseg.k8s.flatten` and the exporters).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from microseg import errors
from microseg.k8s import importer
from microseg.model import addresses, labels, selectors, services

Op = selectors.Operator
Req = selectors.Requirement
Conj = selectors.LabelSelector
EVERYWHERE: tuple[addresses.Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
ALIAS = importer.namespace_label_key("kubernetes.io/metadata.name")
"""`k8s.ns.kubernetes.io/metadata.name` always equals `k8s.namespace`: one key in the algebra."""
BOX_LIMIT = 20_000
"""Boxes one rule may flatten into before the exporter gives up (and says so)."""


# -- label conjunctions ------------------------------------------------------------------------


def conjoin(*conjs: Conj) -> Conj | None:
    """The conjunction in canonical form, or None when no label set satisfies it. Pods always
    carry `k8s.namespace`, so a conjunction demanding its absence matches no pod."""
    by_key: dict[str, list[Req]] = {}
    for conj in conjs:
        for req in conj.requirements:
            key = importer.NAMESPACE_KEY if req.key == ALIAS else req.key
            by_key.setdefault(key, []).append(Req(key, req.operator, req.values))
    by_key.setdefault(importer.NAMESPACE_KEY, []).append(Req(importer.NAMESPACE_KEY, Op.EXISTS))
    out: list[Req] = []
    for key, reqs in by_key.items():
        merged = _merge(key, reqs)
        if merged is None:
            return None
        out.extend(merged)
    return Conj(tuple(r for r in out if not (r.key == importer.NAMESPACE_KEY and r.operator is Op.EXISTS)))


def _merge(key: str, reqs: list[Req]) -> list[Req] | None:
    allowed: set[str] | None = None
    banned: set[str] = set()
    exists = absent = False
    for req in reqs:
        if req.operator is Op.IN:
            allowed = set(req.values) if allowed is None else allowed & set(req.values)
        elif req.operator is Op.NOT_IN:
            banned |= set(req.values)
        elif req.operator is Op.EXISTS:
            exists = True
        else:
            absent = True
    if absent and (exists or allowed is not None):
        return None
    if allowed is not None:
        allowed -= banned
        return [Req(key, Op.IN, tuple(allowed))] if allowed else None
    if absent:
        return [Req(key, Op.DOES_NOT_EXIST)]
    return ([Req(key, Op.EXISTS)] if exists else []) + (
        [Req(key, Op.NOT_IN, tuple(banned))] if banned else []
    )


_NEGATED = {Op.IN: Op.NOT_IN, Op.NOT_IN: Op.IN, Op.EXISTS: Op.DOES_NOT_EXIST, Op.DOES_NOT_EXIST: Op.EXISTS}


def complement(conj: Conj) -> list[Conj]:
    """Pods not matching `conj`, as disjoint conjunctions (r1 fails; r1 holds and r2 fails; ...)."""
    out: list[Conj] = []
    held: list[Req] = []
    for req in conj.requirements:
        piece = conjoin(Conj((*held, Req(req.key, _NEGATED[req.operator], req.values))))
        if piece is not None:
            out.append(piece)
        held.append(req)
    return out


def subtract_conjs(have: Sequence[Conj], minus: Sequence[Conj]) -> list[Conj]:
    """Pods matching some conjunction of `have` and none of `minus`."""
    current = list(have)
    for cut in minus:
        pieces = complement(cut)
        current = [c for a in current for b in pieces if (c := conjoin(a, b)) is not None]
        if len(current) > BOX_LIMIT:
            raise errors.InexpressibleError("the label selectors multiply past what can be exported")
    return _dedupe(current)


def _dedupe(conjs: Iterable[Conj]) -> list[Conj]:
    return list(dict.fromkeys(conjs))


# -- endpoint sets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Universe:
    """The pods that exist now (their workload labels and addresses): the oracle for questions that
    mix labels and addresses."""

    pods: tuple[tuple[labels.Labels, tuple[addresses.Address, ...], str], ...] = ()


@dataclass(frozen=True)
class Endpoints:
    """Pods matching any of `conjs`, plus every address in `nets` (pods included, by IP)."""

    conjs: tuple[Conj, ...] = ()
    nets: tuple[addresses.Network, ...] = ()

    @classmethod
    def of(cls, conjs: Iterable[Conj] = (), nets: Iterable[addresses.Network] = ()) -> Endpoints:
        return cls(tuple(_dedupe(conjs)), tuple(addresses.collapse(nets)))

    @property
    def empty(self) -> bool:
        return not self.conjs and not self.nets

    def matches_labels(self, found: labels.Labels) -> bool:
        """Whether a pod with these labels is in the label part."""
        return any(c.matches(found) for c in self.conjs)


def intersect(x: Endpoints, y: Endpoints, universe: Universe) -> Endpoints:
    """Endpoints in both. Pods in one by label and in the other by address join by their address."""
    conjs = [c for a in x.conjs for b in y.conjs if (c := conjoin(a, b)) is not None]
    nets = list(_intersect_nets(x.nets, y.nets))
    for found, ips, _ in universe.pods:
        if (x.matches_labels(found) and _holds(y.nets, ips)) or (
            y.matches_labels(found) and _holds(x.nets, ips)
        ):
            nets.extend(ipaddress.ip_network(ip) for ip in ips)
    return Endpoints.of(conjs, nets)


def difference(x: Endpoints, y: Endpoints, universe: Universe, rules: tuple[str, ...]) -> Endpoints:
    """Endpoints in `x` and not in `y`. Pods of `x` by label that `y` holds by address cannot be
    carved out by labels: that raises, naming `rules`."""
    conjs = subtract_conjs(x.conjs, y.conjs) if y.conjs else list(x.conjs)
    cut = list(y.nets)
    for found, ips, ref in universe.pods:
        in_result = any(c.matches(found) for c in conjs)
        if in_result and _holds(y.nets, ips):
            raise errors.InexpressibleError(
                f"{' minus '.join(rules)}: pod {ref} is selected by labels but excluded by its address "
                f"{', '.join(map(str, ips))}; no selector can say that",
                rules,
            )
        if not in_result and y.matches_labels(found):
            cut.extend(ipaddress.ip_network(ip) for ip in ips)
    return Endpoints.of(conjs, addresses.exclude(x.nets, cut) if x.nets else ())


def _holds(nets: Sequence[addresses.Network], ips: Sequence[addresses.Address]) -> bool:
    return bool(nets) and any(addresses.contains(nets, ip) for ip in ips)


def _intersect_nets(
    a: Sequence[addresses.Network], b: Sequence[addresses.Network]
) -> Iterable[addresses.Network]:
    for x in a:
        for y in b:
            if x.version == y.version and x.overlaps(y):
                yield x if x.subnet_of(y) else y  # type: ignore[arg-type]


# -- ports -------------------------------------------------------------------------------------

PORTED = (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP)
FULL = ((1, 65535),)


@dataclass(frozen=True)
class Ports:
    """Per ported protocol the port ranges covered; `icmp` and `other` (any other protocol)."""

    ranges: tuple[tuple[services.Protocol, tuple[tuple[int, int], ...]], ...] = ()
    icmp: bool = False
    other: bool = False

    @classmethod
    def of(
        cls, ranges: dict[services.Protocol, list[tuple[int, int]]], icmp: bool = False, other: bool = False
    ) -> Ports:
        cleaned = tuple((p, _normal(ranges[p])) for p in PORTED if _normal(ranges.get(p, [])))
        return cls(cleaned, icmp, other)

    @classmethod
    def everything(cls) -> Ports:
        return cls.of({p: list(FULL) for p in PORTED}, icmp=True, other=True)

    @classmethod
    def of_services(cls, found: Iterable[services.Service]) -> Ports:
        """What a rule's services cover (process constraints are the caller's business)."""
        ranges: dict[services.Protocol, list[tuple[int, int]]] = {}
        icmp = other = False
        for svc in found:
            for spec in svc.specs:
                if spec.protocol is services.Protocol.ANY:
                    return cls.everything()
                if spec.protocol is services.Protocol.ICMP:
                    icmp = True
                    continue
                spans = [(r.first, r.last) for r in spec.ports] or list(FULL)
                ranges.setdefault(spec.protocol, []).extend(spans)
        return cls.of(ranges, icmp, other)

    def get(self, protocol: services.Protocol) -> tuple[tuple[int, int], ...]:
        return dict(self.ranges).get(protocol, ())

    @property
    def empty(self) -> bool:
        return not self.ranges and not self.icmp and not self.other

    @property
    def is_everything(self) -> bool:
        return self == Ports.everything()

    def __and__(self, other: Ports) -> Ports:
        ranges = {p: _meet(self.get(p), other.get(p)) for p in PORTED}
        return Ports.of(ranges, self.icmp and other.icmp, self.other and other.other)

    def __sub__(self, other: Ports) -> Ports:
        ranges = {p: _minus(self.get(p), other.get(p)) for p in PORTED}
        return Ports.of(ranges, self.icmp and not other.icmp, self.other and not other.other)


def _normal(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _meet(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x0, y0), min(x1, y1)) for x0, x1 in a for y0, y1 in b if max(x0, y0) <= min(x1, y1)]


def _minus(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(a)
    for y0, y1 in b:
        nxt = []
        for x0, x1 in out:
            if y1 < x0 or y0 > x1:
                nxt.append((x0, x1))
                continue
            if x0 < y0:
                nxt.append((x0, y0 - 1))
            if y1 < x1:
                nxt.append((y1 + 1, x1))
        out = nxt
    return out


# -- boxes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """Flows from `sources` to `destinations` on `ports`."""

    sources: Endpoints
    destinations: Endpoints
    ports: Ports
    rules: tuple[str, ...] = field(default=(), compare=False)
    """The rules whose regions made this box (for messages)."""

    @property
    def empty(self) -> bool:
        return self.sources.empty or self.destinations.empty or self.ports.empty


def meet(box: Box, other: Box, universe: Universe) -> Box:
    """The flows in both boxes (named after `box`'s rules)."""
    return Box(
        intersect(box.sources, other.sources, universe),
        intersect(box.destinations, other.destinations, universe),
        box.ports & other.ports,
        box.rules,
    )


def subtract(box: Box, cut: Box, universe: Universe) -> list[Box]:
    """`box` minus `cut`, as up to three disjoint boxes."""
    src = intersect(box.sources, cut.sources, universe)
    if src.empty:
        return [box]
    dst = intersect(box.destinations, cut.destinations, universe)
    if dst.empty or (box.ports & cut.ports).empty:
        return [box]
    named = (*box.rules, *cut.rules)
    pieces = [
        Box(difference(box.sources, cut.sources, universe, named), box.destinations, box.ports, box.rules),
        Box(src, difference(box.destinations, cut.destinations, universe, named), box.ports, box.rules),
        Box(src, dst, box.ports - cut.ports, box.rules),
    ]
    return [p for p in pieces if not p.empty]


def subtract_all(boxes: list[Box], cuts: Sequence[Box], universe: Universe) -> list[Box]:
    """Every box minus every cut."""
    for cut in cuts:
        boxes = [piece for box in boxes for piece in subtract(box, cut, universe)]
        if len(boxes) > BOX_LIMIT:
            named = boxes[0].rules
            raise errors.InexpressibleError(
                f"rule {named[0] if named else '?'} splits into more than {BOX_LIMIT} pieces once earlier "
                "deny and pass rules are taken out; use --format calico, which keeps the order",
                named,
            )
    return boxes
