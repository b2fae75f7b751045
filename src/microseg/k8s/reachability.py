"""What a cluster's NetworkPolicies allow: a verdict per ordered pod pair and port, with reasons.

Fed by a `cluster.Cluster`; feeds `microseg k8s reachability` and the export proofs. Upstream
semantics: a pod is isolated for ingress (egress) when some policy of its namespace selects it with
that policy type; a new connection is allowed when the source side allows it (not egress-isolated,
or an egress rule of a policy selecting the source admits the destination and port) and the
destination side allows it (likewise for ingress). Policies and rules are additive.

How: pods are bit positions. Per probe (port, protocol) and destination pod, the sources its
ingress admits are one integer (the OR of the matching rules' peer masks); the sources whose
egress admits the destination are another (the OR of the selecting masks of the egress policies
whose rules admit it). Their AND is the verdict for every source at once, so 12 million verdicts
cost a few thousand integer operations plus reading out the bits. Reasons are worked out only for
the verdicts someone prints.

What it deliberately does not do: judge pod-to-itself traffic (CNIs disagree; never reported),
hostNetwork pods or Services (a Service's virtual IP is not a pod).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from microseg.k8s import cluster, netpol
from microseg.model import selectors, services


@dataclass(frozen=True, order=True)
class Probe:
    """A destination port and protocol a verdict is for."""

    port: int
    protocol: services.Protocol = services.Protocol.TCP

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.value.upper()}"


@dataclass(frozen=True)
class Connection:
    """One verdict: may `source` open a new connection to `destination` on `probe`?"""

    source: cluster.Pod
    destination: cluster.Pod
    probe: Probe
    allowed: bool
    reason: str

    def to_dict(self) -> dict[str, object]:
        """The JSON contract of `microseg k8s reachability -o json`."""
        return {
            "from": self.source.ref,
            "to": self.destination.ref,
            "port": self.probe.port,
            "protocol": self.probe.protocol.value.upper(),
            "allowed": self.allowed,
            "reason": self.reason,
        }


class PodIndex:
    """Pods as bits, with label, namespace, named-port and address lookups as masks."""

    def __init__(self, found: cluster.Cluster) -> None:
        self.cluster = found
        self.pods = found.pods
        self.all = (1 << len(self.pods)) - 1
        self.position = {p.ref: i for i, p in enumerate(self.pods)}
        self.in_namespace: dict[str, int] = defaultdict(int)
        self._by_label: dict[tuple[str, str], int] = defaultdict(int)
        self._by_key: dict[str, int] = defaultdict(int)
        self.by_named_port: dict[tuple[str, services.Protocol, int], int] = defaultdict(int)
        for i, pod in enumerate(self.pods):
            bit = 1 << i
            self.in_namespace[pod.namespace] |= bit
            for key, value in pod.labels.items():
                self._by_label[(key, value)] |= bit
                self._by_key[key] |= bit
            for port in pod.ports:
                if port.name:
                    self.by_named_port[(port.name, port.protocol, port.port)] |= bit
        self._selected: dict[selectors.LabelSelector, int] = {}
        self._namespaces: dict[selectors.LabelSelector, int] = {}
        self._blocks: dict[netpol.IpBlock, int] = {}

    def select(self, selector: selectors.LabelSelector) -> int:
        """Pods whose labels match `selector` (any namespace)."""
        mask = self._selected.get(selector)
        if mask is None:
            mask = self.all
            for req in selector.requirements:
                mask &= self._requirement(req)
            self._selected[selector] = mask
        return mask

    def _requirement(self, req: selectors.Requirement) -> int:
        if req.operator is selectors.Operator.EXISTS:
            return self._by_key.get(req.key, 0)
        if req.operator is selectors.Operator.DOES_NOT_EXIST:
            return self.all & ~self._by_key.get(req.key, 0)
        hits = 0
        for value in req.values:
            hits |= self._by_label.get((req.key, value), 0)
        return hits if req.operator is selectors.Operator.IN else self.all & ~hits

    def select_namespaces(self, selector: selectors.LabelSelector) -> int:
        """Pods in the namespaces whose labels match `selector`."""
        mask = self._namespaces.get(selector)
        if mask is None:
            mask = 0
            for name, ns in self.cluster.namespaces.items():
                if selector.matches(ns.labels):
                    mask |= self.in_namespace.get(name, 0)
            self._namespaces[selector] = mask
        return mask

    def in_block(self, block: netpol.IpBlock) -> int:
        """Pods with an address in the block."""
        mask = self._blocks.get(block)
        if mask is None:
            mask = 0
            for i, pod in enumerate(self.pods):
                if any(block.contains(ip) for ip in pod.ips):
                    mask |= 1 << i
            self._blocks[block] = mask
        return mask

    def peer(self, peer: netpol.Peer, namespace: str) -> int:
        """Pods one peer of a policy in `namespace` stands for."""
        if peer.ip_block is not None:
            return self.in_block(peer.ip_block)
        mask = self.all if peer.pod_selector is None else self.select(peer.pod_selector)
        if peer.namespace_selector is None:
            return mask & self.in_namespace.get(namespace, 0)
        return mask & self.select_namespaces(peer.namespace_selector)

    def peers(self, rule: netpol.PolicyRule, namespace: str) -> int:
        """Pods a rule's peers stand for (no peers: every pod)."""
        if not rule.peers:
            return self.all
        mask = 0
        for peer in rule.peers:
            mask |= self.peer(peer, namespace)
        return mask

    def ports(self, rule: netpol.PolicyRule, probe: Probe) -> int:
        """Destination pods for which the rule's ports cover `probe` (named ports differ per pod)."""
        if not rule.ports:
            return self.all
        mask = 0
        for entry in rule.ports:
            hit = entry.number_matches(probe.port, probe.protocol)
            if hit:
                return self.all
            if hit is None:
                mask |= self.by_named_port.get((str(entry.port), entry.protocol, probe.port), 0)
        return mask


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class Reachability:
    """Verdicts for every ordered pair of distinct pods on every probe of the destination.

    `probes` given: every pod is probed on each of them. Otherwise each destination is probed on
    its own container ports (a pod without ports gets no verdicts as a destination)."""

    def __init__(self, found: cluster.Cluster, probes: Sequence[Probe] | None = None) -> None:
        self.index = index = PodIndex(found)
        self.pods = index.pods
        self.policies = found.policies
        self.given_probes = tuple(sorted(set(probes))) if probes is not None else None
        self.probes_of: list[tuple[Probe, ...]] = [
            self.given_probes
            if self.given_probes is not None
            else tuple(sorted({Probe(p.port, p.protocol) for p in pod.ports}))
            for pod in self.pods
        ]
        wanted: dict[Probe, int] = defaultdict(int)
        for i, probes_here in enumerate(self.probes_of):
            for probe in probes_here:
                wanted[probe] |= 1 << i
        self.wanted = dict(sorted(wanted.items()))
        """Per probe, the destination pods probed on it."""
        self.ingress_policies: dict[int, list[int]] = defaultdict(list)
        """Per pod, the indexes of the policies isolating its ingress (likewise egress below)."""
        self.egress_policies: dict[int, list[int]] = defaultdict(list)
        self.selected = [self._select(i, p) for i, p in enumerate(self.policies)]
        self.ingress_isolated = self.egress_isolated = 0
        for i, policy in enumerate(self.policies):
            self.ingress_isolated |= self.selected[i] if policy.isolates_ingress else 0
            self.egress_isolated |= self.selected[i] if policy.isolates_egress else 0
        self.ingress_admits: dict[Probe, dict[int, list[tuple[int, int]]]] = {p: {} for p in self.wanted}
        """Per probe and isolated destination: (policy index, sources its ingress rules admit)."""
        self.egress_targets: dict[Probe, list[int]] = {p: [0] * len(self.policies) for p in self.wanted}
        """Per probe and policy index: the destinations its egress rules admit."""
        self.admitted: dict[Probe, list[int]] = {probe: [0] * len(self.pods) for probe in self.wanted}
        """Per probe and destination, the sources allowed (bit s of admitted[probe][d])."""
        self._reasons: dict[tuple[int, ...], str] = {}
        self._compute()

    def _select(self, i: int, policy: netpol.NetworkPolicy) -> int:
        selected = self.index.select(policy.pod_selector) & self.index.in_namespace.get(policy.namespace, 0)
        for pod in _bits(selected):
            if policy.isolates_ingress:
                self.ingress_policies[pod].append(i)
            if policy.isolates_egress:
                self.egress_policies[pod].append(i)
        return selected

    def _compute(self) -> None:
        index = self.index
        for probe, wanted in self.wanted.items():
            ingress = [index.all] * len(self.pods)
            for d in _bits(self.ingress_isolated & wanted):
                ingress[d] = 0
            egress_side = [index.all & ~self.egress_isolated] * len(self.pods)
            for i, policy in enumerate(self.policies):
                if policy.isolates_ingress:
                    self._ingress(i, probe, wanted, ingress)
                if policy.isolates_egress:
                    self._egress(i, probe, wanted, egress_side)
            row = self.admitted[probe]
            for d in _bits(wanted):
                row[d] = ingress[d] & egress_side[d] & ~(1 << d)

    def _ingress(self, i: int, probe: Probe, wanted: int, ingress: list[int]) -> None:
        """Sources each selected destination admits through policy `i`'s ingress rules."""
        policy, index, selected = self.policies[i], self.index, self.selected[i] & wanted
        admits: dict[int, int] = defaultdict(int)
        for rule in policy.ingress:
            covered = index.ports(rule, probe) & selected
            if covered:
                peers = index.peers(rule, policy.namespace)
                for d in _bits(covered):
                    admits[d] |= peers
        per_destination = self.ingress_admits[probe]
        for d in _bits(selected):
            ingress[d] |= admits.get(d, 0)
            per_destination.setdefault(d, []).append((i, admits.get(d, 0)))

    def _egress(self, i: int, probe: Probe, wanted: int, egress_side: list[int]) -> None:
        """Destinations policy `i`'s egress rules admit; its selected sources may reach them."""
        policy, index = self.policies[i], self.index
        targets = 0
        for rule in policy.egress:
            targets |= index.peers(rule, policy.namespace) & index.ports(rule, probe)
        targets &= wanted
        self.egress_targets[probe][i] = targets
        if self.selected[i]:
            for d in _bits(targets):
                egress_side[d] |= self.selected[i]

    # -- reading verdicts ----------------------------------------------------------------------

    def allowed(self, source: int, destination: int, probe: Probe) -> bool:
        """The verdict for pod indexes `source` -> `destination` on `probe` (a probe the
        destination is probed on)."""
        return bool(self.admitted[probe][destination] >> source & 1)

    def count(self) -> tuple[int, int]:
        """(verdicts, allowed verdicts) over every pair and probe."""
        total = allowed = 0
        others = len(self.pods) - 1
        for probe, wanted in self.wanted.items():
            row = self.admitted[probe]
            for d in _bits(wanted):
                total += others
                allowed += row[d].bit_count()
        return total, allowed

    def verdicts(self) -> Iterator[tuple[int, int, Probe, bool]]:
        """(source, destination, probe, allowed) in output order: by source, destination, probe."""
        n = len(self.pods)
        rows = {
            probe: [format(m, f"0{n}b")[::-1] if m else "" for m in row]
            for probe, row in self.admitted.items()
        }
        for s in range(n):
            for d in range(n):
                if d == s:
                    continue
                for probe in self.probes_of[d]:
                    bits = rows[probe][d]
                    yield s, d, probe, bool(bits) and bits[s] == "1"

    def connections(self) -> Iterator[Connection]:
        """Every verdict with its reason, in output order."""
        for s, d, probe, allowed, ingress, egress in self.rows():
            yield Connection(self.pods[s], self.pods[d], probe, allowed, f"{ingress}; {egress}")

    def rows(self) -> Iterator[tuple[int, int, Probe, bool, str, str]]:
        """(source, destination, probe, allowed, ingress reason, egress reason) in output order,
        without building objects: what `-o json` streams for millions of verdicts. The reason of a
        side depends on few bits (which policies admit the peer), so each is worked out once."""
        n = len(self.pods)
        probes = list(self.wanted)
        position = {p: q for q, p in enumerate(probes)}
        bits = [[format(m, f"0{n}b")[::-1] if m else "" for m in self.admitted[p]] for p in probes]
        probed = [[position[p] for p in here] for here in self.probes_of]
        admits = [self.ingress_admits[p] for p in probes]
        targets = [self.egress_targets[p] for p in probes]
        for s in range(n):
            selecting = self.egress_policies.get(s, [])
            for d in range(n):
                if d == s:
                    continue
                for q in probed[d]:
                    row = bits[q][d]
                    ingress = self._ingress_part(s, d, q, admits[q].get(d))
                    egress = self._egress_part(s, d, q, selecting, targets[q])
                    yield s, d, probes[q], bool(row) and row[s] == "1", ingress, egress

    def reason(self, source: int, destination: int, probe: Probe) -> str:
        """Which policies decided, on each side, or that a side is not isolated."""
        q = list(self.wanted).index(probe)
        ingress = self._ingress_part(source, destination, q, self.ingress_admits[probe].get(destination))
        selecting = self.egress_policies.get(source, [])
        egress = self._egress_part(source, destination, q, selecting, self.egress_targets[probe])
        return f"{ingress}; {egress}"

    def _ingress_part(self, s: int, d: int, q: int, admits: list[tuple[int, int]] | None) -> str:
        if not admits:
            return "ingress: destination not isolated"
        pattern = 1
        for _, mask in admits:
            pattern = pattern << 1 | (mask >> s & 1)
        key = (0, d, q, pattern)
        found = self._reasons.get(key)
        if found is None:
            admitting = [self.policies[i].ref for i, mask in admits if mask >> s & 1]
            if admitting:
                found = f"ingress allowed by {', '.join(admitting)}"
            else:
                isolating = ", ".join(self.policies[i].ref for i in self.ingress_policies[d])
                found = f"ingress isolated by {isolating} and no ingress rule admits it"
            self._reasons[key] = found
        return found

    def _egress_part(self, s: int, d: int, q: int, selecting: list[int], targets: list[int]) -> str:
        if not selecting:
            return "egress: source not isolated"
        pattern = 1
        for i in selecting:
            pattern = pattern << 1 | (targets[i] >> d & 1)
        key = (1, s, q, pattern)
        found = self._reasons.get(key)
        if found is None:
            admitting = [self.policies[i].ref for i in selecting if targets[i] >> d & 1]
            if admitting:
                found = f"egress allowed by {', '.join(admitting)}"
            else:
                isolating = ", ".join(self.policies[i].ref for i in selecting)
                found = f"egress isolated by {isolating} and no egress rule admits it"
            self._reasons[key] = found
        return found
