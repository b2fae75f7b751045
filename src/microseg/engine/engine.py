"""The policy engine: the one place where the pieces are wired together.

```
 estate.rules, tiers, ip lists ──> RuleBook ── selectors ──> LabelIndex
                                     │                          ▲ label sets appear / vanish
 estate.workloads ── label rules ──> effective labels ──> IdentityTable (one entry per label set)
                                     │                          │ new identity
                                     ├──> RulesetCompiler <─────┘ (entries per identity)
                                     └──> AddressSets  <── workload addresses (members only)
                                                │
            per-workload RulesetDocument = identity entries that can match on its addresses
                                           + referenced sets + workload
            Evaluator: the same book, index and inventory -> Verdict
```

Workload changes are incremental: a relabel recomputes only a new identity's entries (shared by
every workload with those labels) and moves the workload between selector sets; a re-address
changes set members only. Documents are built on demand and cached until a set they use, or the
workload itself, changes. Policy changes (rules, tiers, lists) build a new engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from microseg.engine import address_sets, compiler, evaluator, identities, label_index, rulebook
from microseg.errors import LookupFailedError, ValidationError
from microseg.model import addresses, labelrules, labels, ruleset, services, verdicts
from microseg.model.estate import Estate
from microseg.model.workloads import QUARANTINE_LABEL, Workload, quarantine_level


@dataclass(frozen=True)
class Delta:
    """What one workload change did: set-member deltas and the workloads whose documents changed."""

    workload: str
    sets: dict[str, address_sets.SetDelta]
    workloads: frozenset[str]
    new_identities: int


class PolicyEngine:
    """Compiles and evaluates one estate; accepts workload changes incrementally."""

    def __init__(self, estate: Estate) -> None:
        self.estate = estate
        self.book = rulebook.RuleBook(estate)
        self.index = label_index.LabelIndex(self.book.selectors)
        keys = rulebook.label_keys_used(self.book) | {QUARANTINE_LABEL}
        self.identities = identities.IdentityTable(keys, self._on_identity_added, self._on_identity_removed)
        self.compiler = compiler.RulesetCompiler(self.book)
        self._set_names = {k: rulebook.selector_set_name(s) for k, s in self.book.selectors.items()}
        """Each selector's set name, once (a hash of its text, asked per workload and selector)."""
        keys_by_set = {n: k for k, n in self._set_names.items()}
        self.sets = address_sets.AddressSets(self.book.static_sets, keys_by_set)
        self.evaluator = evaluator.Evaluator(self.book, self, estate.control_plane)
        self.rulesets: dict[labels.Labels, compiler.IdentityRuleset] = {}
        self._identities_by_set: dict[str, set[labels.Labels]] = {}
        self._host_rulesets: dict[labels.Labels, dict[frozenset[str], compiler.IdentityRuleset]] = {}
        self._held: dict[tuple[addresses.Network, ...], frozenset[str]] = {}
        self._workloads: dict[str, Workload] = {}
        self._effective: dict[str, labels.Labels] = {}
        self._hosts: dict[addresses.Address, str] = {}
        self._networks: dict[addresses.Network, str] = {}
        self._new_identities = 0
        self._documents: dict[str, tuple[object, ruleset.RulesetDocument]] = {}
        for workload in estate.workloads:
            self._apply(workload)
        self.sets.take_deltas()

    @property
    def problems(self) -> list[str]:
        """What the engine had to leave out or treat as matching nothing (it fails closed)."""
        return list(self.book.problems)

    # -- inventory changes -------------------------------------------------------------------

    def upsert_workload(self, workload: Workload) -> Delta:
        """Add or change one workload; return what changed."""
        self._new_identities = 0
        self._apply(workload)
        return self._delta(workload.name)

    def remove_workload(self, name: str) -> Delta:
        """Remove one workload; return what changed."""
        old = self._workloads.pop(name, None)
        if old is None:
            raise LookupFailedError(f"no workload called {name!r}")
        self._new_identities = 0
        identity = self.identities.identity_of[name]
        for key in self.index.matching(identity):
            self.sets.remove(self._set_of(key), old.addresses)
        self.identities.release(name)
        self._forget_addresses(old)
        del self._effective[name]
        self._documents.pop(name, None)
        return self._delta(name)

    def _apply(self, workload: Workload) -> None:
        name = workload.name
        old = self._workloads.get(name)
        self._check_addresses(workload)
        effective = labelrules.effective_labels(workload, self.estate.label_rules)
        old_identity = self.identities.identity_of.get(name)
        old_keys = self.index.matching(old_identity) if old_identity is not None else frozenset()
        if old is not None:
            for key in old_keys:
                self.sets.remove(self._set_of(key), old.addresses)
            self._forget_addresses(old)
        _, identity = self.identities.assign(name, effective)
        for key in self.index.matching(identity):
            self.sets.add(self._set_of(key), workload.addresses)
        self._workloads[name] = workload
        self._effective[name] = effective
        for net in workload.addresses:
            if net.num_addresses == 1:
                self._hosts[net.network_address] = name
            else:
                self._networks[net] = name

    def _set_of(self, key: str) -> str:
        return self._set_names[key]

    def _check_addresses(self, workload: Workload) -> None:
        for net in workload.addresses:
            owner = self._hosts.get(net.network_address) if net.num_addresses == 1 else None
            owner = owner or next(
                (o for n, o in self._networks.items() if n.version == net.version and n.overlaps(net)), None
            )
            if owner is None and net.num_addresses > 1:
                owner = next((o for a, o in self._hosts.items() if a in net), None)
            if owner is not None and owner != workload.name:
                raise ValidationError(f"workload {workload.name}: address {net} overlaps workload {owner}")

    def _forget_addresses(self, workload: Workload) -> None:
        for net in workload.addresses:
            if net.num_addresses == 1:
                self._hosts.pop(net.network_address, None)
            else:
                self._networks.pop(net, None)

    def _on_identity_added(self, identity: labels.Labels) -> None:
        matched = self.index.on_identity_added(identity)
        compiled = self.compiler.compile(matched)
        self.rulesets[identity] = compiled
        for name in self._sets_used(identity, compiled):
            self._identities_by_set.setdefault(name, set()).add(identity)
        self._new_identities += 1

    def _on_identity_removed(self, identity: labels.Labels) -> None:
        compiled = self.rulesets.pop(identity)
        self._host_rulesets.pop(identity, None)
        for name in self._sets_used(identity, compiled):
            users = self._identities_by_set[name]
            users.discard(identity)
            if not users:
                del self._identities_by_set[name]
        self.compiler.release(self.index.matching(identity))
        self.index.on_identity_removed(identity)

    def _sets_used(self, identity: labels.Labels, compiled: compiler.IdentityRuleset) -> frozenset[str]:
        """The sets the identity's documents may refer to: its entries' sets, and those of the
        quarantined peers it refuses (`compiler.keep_quarantine`) when it keeps the forensics list."""
        if self.book.forensics_set is None:
            return compiled.set_names
        level = quarantine_level(identity)
        refused = {compiler.refused_set(level, in_list) for in_list in (True, False)} - {None}
        return compiled.set_names | {name for name in refused if name is not None}

    def _delta(self, name: str) -> Delta:
        deltas = self.sets.take_deltas()
        touched: set[str] = {name} if name in self._workloads else set()
        for set_name in deltas:
            for identity in self._identities_by_set.get(set_name, ()):
                touched.update(self.identities.members[identity])
        return Delta(name, deltas, frozenset(touched), self._new_identities)

    # -- the Inventory protocol the evaluator reads ------------------------------------------

    def workload_at(self, address: addresses.Address) -> str | None:
        """The workload holding `address` (hosts exactly, unmanaged networks by containment)."""
        owner = self._hosts.get(address)
        if owner is None and self._networks:
            owner = next((o for n, o in self._networks.items() if address in n), None)
        return owner

    def workload(self, name: str) -> Workload:
        """The workload called `name`."""
        try:
            return self._workloads[name]
        except KeyError:
            raise LookupFailedError(f"no workload called {name!r}") from None

    def workload_names(self) -> list[str]:
        """Every workload, sorted."""
        return sorted(self._workloads)

    def effective_labels(self, name: str) -> labels.Labels:
        """Labels after label rules."""
        return self._effective[name]

    def identity(self, name: str) -> labels.Labels:
        """Security-relevant labels of a workload (its identity)."""
        return self.identities.identity_of[name]

    def matched_selectors(self, name: str) -> frozenset[str]:
        """Selector keys the workload's identity matches."""
        return self.index.matching(self.identities.identity_of[name])

    # -- outputs -----------------------------------------------------------------------------

    def document(self, name: str) -> ruleset.RulesetDocument:
        """The ruleset document for a managed workload (cached until something it uses changes)."""
        workload = self.workload(name)
        if not workload.managed:
            raise LookupFailedError(f"workload {name} is unmanaged: no agent, no ruleset")
        compiled = self.host_ruleset(name)
        sets = tuple(self.sets.get(n) for n in compiled.sorted_set_names)
        stamp = (workload, compiled, sets)
        cached = self._documents.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        doc = ruleset.RulesetDocument(
            workload=name,
            addresses=workload.addresses,
            mode=workload.mode_under(self._effective[name]),
            policy_version=self.estate.version,
            tiers=self.book.tiers,
            control_plane=self.estate.control_plane,
            address_sets=sets,
            ingress=compiled.ingress,
            egress=compiled.egress,
        ).with_hash()
        self._documents[name] = (stamp, doc)
        return doc

    def host_ruleset(self, name: str) -> compiler.IdentityRuleset:
        """The identity's entries that can match on this workload's addresses (`compiler.on_host`),
        shared by the workloads of an identity inside the same IP lists and CIDRs."""
        identity = self.identities.identity_of[name]
        compiled = self.rulesets[identity]
        held = self.held_sets(self._workloads[name]) & compiled.local_set_names
        by_held = self._host_rulesets.setdefault(identity, {})
        found = by_held.get(held)
        if found is None:
            level, in_list = quarantine_level(identity), self.book.forensics_set in held
            found = by_held[held] = compiler.keep_quarantine(compiler.on_host(compiled, held), level, in_list)
        return found

    def held_sets(self, workload: Workload) -> frozenset[str]:
        """The static address sets (rules' IP lists and CIDRs) holding an address of `workload`
        (the static sets only change with a full compile, so this is remembered per address list)."""
        found = self._held.get(workload.addresses)
        if found is None:
            found = self._held[workload.addresses] = self._held_by(workload)
        return found

    def _held_by(self, workload: Workload) -> frozenset[str]:
        names: set[str] = set()
        static = self.book.static_sets
        for net in workload.addresses:
            if net.num_addresses > 1:  # an unmanaged network (no document): any overlap
                names.update(n for n, s in static.items() if any(_overlap(m, net) for m in s.networks))
                continue
            for sources in (True, False):
                _, peers = self.book.address_match(net.network_address, sources=sources)
                names.update(p.set_name for p in peers if p.set_name)
        return frozenset(names)

    def documents(self) -> dict[str, ruleset.RulesetDocument]:
        """Documents of every managed workload."""
        return {n: self.document(n) for n in self.workload_names() if self._workloads[n].managed}

    def evaluate(
        self,
        source: verdicts.Endpoint,
        destination: verdicts.Endpoint,
        port: int | None,
        protocol: services.Protocol,
        *,
        process: str | None = None,
        client_process: str | None = None,
        at: datetime | None = None,
    ) -> verdicts.Verdict:
        """The one verdict function (see `microseg.engine.evaluator`)."""
        return self.evaluator.evaluate(
            source, destination, port, protocol, process=process, client_process=client_process, at=at
        )

    def endpoint(self, name_or_address: str) -> verdicts.Endpoint:
        """A workload by name (its first address) or any IP address."""
        if name_or_address in self._workloads:
            workload = self._workloads[name_or_address]
            first = workload.addresses[0]
            return verdicts.Endpoint(first.network_address, workload.name, first)
        try:
            addr = addresses.address(name_or_address)
        except ValidationError:
            raise LookupFailedError(f"{name_or_address!r} is neither a workload nor an IP address") from None
        return verdicts.Endpoint(addr, self.workload_at(addr))


def _overlap(a: addresses.Network, b: addresses.Network) -> bool:
    return a.version == b.version and a.overlaps(b)
