"""microseg's ordered rules -> the flows each rule really decides, as boxes for the exporters.

Fed by the rule book (every rule in evaluation order, built-in quarantine rules included) and
the inventory (pods from manifests, other workloads from the policy); feeds the exporters.

    rule peers --endpoints()--> Endpoints (pods by label, other workloads and lists by address)
    rule       --boxes()------> Box per (source peer, destination peer) over the rule's ports
    book       --allowed()----> per allow rule, its boxes minus every earlier deny and every
                                earlier pass of its tier: what it lets through on its own
               --denied()-----> per deny rule, its boxes minus earlier passes of its tier and
                                minus what earlier rules allowed (for formats where deny wins)

What it deliberately does not do: write any format. Time windows and process constraints are
refused here (`check_rule`) for rules that reach pods, because no exported format can say them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microseg import errors
from microseg.engine import rulebook
from microseg.k8s import regions
from microseg.model import addresses, labelrules, labels, rules, selectors, workloads
from microseg.model.estate import Estate


@dataclass(frozen=True)
class Inventory:
    """Pods (as workloads, from the cluster) and every other workload of the estate."""

    pods: tuple[workloads.Workload, ...]
    others: tuple[tuple[workloads.Workload, labels.Labels], ...]
    """(workload, its effective labels) for workloads that are not pods."""
    ip_lists: dict[str, tuple[addresses.Network, ...]]
    pod_cidrs: tuple[addresses.Network, ...] = ()

    @classmethod
    def of(
        cls, est: Estate, pods: Sequence[workloads.Workload], pod_cidrs: Sequence[addresses.Network] = ()
    ) -> Inventory:
        others = tuple(
            (w, labelrules.effective_labels(w, est.label_rules))
            for w in est.workloads
            if w.kind is not workloads.WorkloadKind.POD
        )
        lists = {i.name: tuple(i.networks) for i in est.ip_lists}
        return cls(tuple(pods), others, lists, tuple(pod_cidrs))

    @property
    def universe(self) -> regions.Universe:
        return regions.Universe(
            tuple((p.labels, tuple(n.network_address for n in p.addresses), p.name) for p in self.pods)
        )


def endpoints(peer: selectors.Peer, inventory: Inventory) -> regions.Endpoints:
    """What one microseg peer stands for, in the exporters' terms."""
    if isinstance(peer, selectors.AnyPeer):
        world = addresses.exclude(regions.EVERYWHERE, inventory.pod_cidrs)
        return regions.Endpoints.of([regions.Conj()], world)
    if isinstance(peer, selectors.SelectorPeer):
        conj = regions.conjoin(peer.selector)
        nets = [n for w, found in inventory.others if peer.selector.matches(found) for n in w.addresses]
        return regions.Endpoints.of([] if conj is None else [conj], nets)
    if isinstance(peer, selectors.IpListPeer):
        return regions.Endpoints.of((), inventory.ip_lists.get(peer.name, ()))
    return regions.Endpoints.of((), peer.networks)


def boxes(br: rulebook.BookRule, inventory: Inventory) -> list[regions.Box]:
    """One box per (source peer, destination peer) of a rule."""
    ports = regions.Ports.of_services(br.rule.services)
    sources = [endpoints(p, inventory) for p in br.rule.sources]
    destinations = [endpoints(p, inventory) for p in br.rule.destinations]
    out = [regions.Box(s, d, ports, (br.rule.ref,)) for s in sources for d in destinations]
    return [b for b in out if not b.empty]


def reaches_pods(box: regions.Box, inventory: Inventory) -> bool:
    """Whether a box can concern a pod on either side (a label part, or a pod's address)."""
    for side in (box.sources, box.destinations):
        if side.conjs or any(
            addresses.contains(side.nets, a.network_address) for p in inventory.pods for a in p.addresses
        ):
            return True
    return False


def check_rule(
    br: rulebook.BookRule, found: list[regions.Box], inventory: Inventory, port_level: bool
) -> list[str]:
    """Refuse what no format can say for a rule that reaches pods; return warnings for what
    `port_level` accepts (a process constraint enforced at port level)."""
    if not any(reaches_pods(b, inventory) for b in found):
        return []
    rule = br.rule
    if rule.not_before is not None or rule.not_after is not None:
        raise errors.InexpressibleError(
            f"rule {rule.ref} has a time window (notBefore/notAfter); Kubernetes policies have none, and "
            "exporting it would keep it in force outside its window",
            (rule.ref,),
        )
    constrained = [s.name for s in rule.services if s.has_process_constraint]
    if not constrained:
        return []
    if not port_level:
        raise errors.InexpressibleError(
            f"rule {rule.ref}: service {', '.join(constrained)} names a process or user, which Kubernetes "
            "policies cannot check; pass --port-level to enforce its ports only",
            (rule.ref,),
        )
    return [f"rule {rule.ref}: process/user of {', '.join(constrained)} not enforced (port level only)"]


@dataclass(frozen=True)
class Flattened:
    """Per rule, the flows it decides on its own, in evaluation order."""

    allowed: tuple[tuple[rulebook.BookRule, tuple[regions.Box, ...]], ...]
    denied: tuple[tuple[rulebook.BookRule, tuple[regions.Box, ...]], ...]
    passed: tuple[tuple[rulebook.BookRule, tuple[regions.Box, ...]], ...]
    warnings: tuple[str, ...]


def flatten(book: rulebook.RuleBook, inventory: Inventory, *, port_level: bool, deny_wins: bool) -> Flattened:
    """Walk the book in order. Allows lose earlier denies and earlier passes of their tier; with
    `deny_wins` (Cilium), allows are only cut by passes and denies are cut by earlier allows."""
    universe = inventory.universe
    allowed, denied, passed, warnings = [], [], [], []
    cut_by_deny: list[regions.Box] = []
    allowed_so_far: list[regions.Box] = []
    tier, tier_passes = "", list[regions.Box]()
    for br in book.rules:
        if br.rule.tier != tier:
            tier, tier_passes = br.rule.tier, []
        found = boxes(br, inventory)
        warnings += check_rule(br, found, inventory, port_level)
        mine = regions.subtract_all(found, tier_passes, universe)
        action = br.rule.action
        if action is rules.Action.ALLOW:
            own = mine if deny_wins else regions.subtract_all(mine, cut_by_deny, universe)
            allowed.append((br, tuple(own)))
            allowed_so_far += regions.subtract_all(mine, cut_by_deny, universe) if deny_wins else own
        elif action is rules.Action.DENY:
            own = regions.subtract_all(mine, allowed_so_far, universe) if deny_wins else mine
            denied.append((br, tuple(own)))
            cut_by_deny += mine
        else:
            passed.append((br, tuple(mine)))
            tier_passes += mine
    return Flattened(tuple(allowed), tuple(denied), tuple(passed), tuple(warnings))


def where_allowed(
    denied: Sequence[tuple[rulebook.BookRule, tuple[regions.Box, ...]]],
    allows: Sequence[regions.Box],
    universe: regions.Universe,
) -> list[tuple[rulebook.BookRule, tuple[regions.Box, ...]]]:
    """Deny boxes whose ports a port-only format cannot name (ICMP, "every protocol but tcp/80")
    cut down to what some allow would let through: where no allow reaches, the default deny
    already blocks, so a deny of everything but tcp/80 after an allow of tcp/80 needs no box at
    all. Boxes a format can name are kept whole: fewer, more readable policies."""
    out = []
    for br, boxes in denied:
        kept: list[regions.Box] = []
        for d in boxes:
            nameable = d.ports.is_everything or not (d.ports.icmp or d.ports.other)
            kept += [d] if nameable else [m for a in allows if not (m := regions.meet(d, a, universe)).empty]
        out.append((br, tuple(kept)))
    return out
