"""The label index: which selectors match which identities, kept current as workloads change.

Fed by the rule book (the distinct selectors, each once however many rules use it) and by the
identity table (label sets appearing and disappearing); feeds the compiler and address sets via
`selectors_by_identity` / `identities_by_selector`.

A new label set is tested only against the selectors that could match it: each selector is filed
under one of its requirements that a label set must carry to match (`key In (values)` under each
value, `key Exists` under the key; the one fewest other selectors are filed under), and a label set
looks up its own pairs and keys. Selectors with no such requirement (only NotIn, DoesNotExist, or
none) are tested against every label set. Testing every selector made a compile of 50,000
workloads (5,000 label sets, 5,000 rules) cost tens of seconds.

What it deliberately does not do: know workloads or addresses. It matches label sets, so 200
replicas with the same labels cost one match per candidate selector.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from microseg.model import labels, selectors

Filed = list[tuple[str, selectors.LabelSelector]]
"""Selectors (key, selector) filed under one label pair or key."""


class LabelIndex:
    """Paired indexes selector key <-> identity labels."""

    def __init__(self, selector_map: dict[str, selectors.LabelSelector]) -> None:
        self._selectors = dict(sorted(selector_map.items()))
        self.selectors_by_identity: dict[labels.Labels, frozenset[str]] = {}
        self.identities_by_selector: dict[str, set[labels.Labels]] = defaultdict(set)
        self._by_pair: dict[tuple[str, str], Filed] = defaultdict(list)
        self._by_key: dict[str, Filed] = defaultdict(list)
        self._everywhere: Filed = []
        self._file(self._selectors)

    def _file(self, found: dict[str, selectors.LabelSelector]) -> None:
        """Each selector under its rarest required pair or key (counted over all selectors)."""
        pairs: Counter[tuple[str, str]] = Counter()
        keys: Counter[str] = Counter()
        for selector in found.values():
            for r in selector.requirements:
                if r.operator is selectors.Operator.IN:
                    pairs.update((r.key, v) for v in r.values)
                elif r.operator is selectors.Operator.EXISTS:
                    keys[r.key] += 1
        for name, selector in found.items():
            anchors: list[tuple[int, int, selectors.Requirement]] = []
            for i, r in enumerate(selector.requirements):
                if r.operator is selectors.Operator.IN:
                    anchors.append((sum(pairs[(r.key, v)] for v in r.values), i, r))
                elif r.operator is selectors.Operator.EXISTS:
                    anchors.append((keys[r.key], i, r))
            if not anchors:
                self._everywhere.append((name, selector))
                continue
            _, _, anchor = min(anchors)
            if anchor.operator is selectors.Operator.EXISTS:
                self._by_key[anchor.key].append((name, selector))
            else:
                for value in anchor.values:
                    self._by_pair[(anchor.key, value)].append((name, selector))

    def _candidates(self, identity: labels.Labels) -> Filed:
        """The selectors that can match `identity`: filed under one of its pairs or keys, or
        everywhere (a selector filed under several values of one key is found once: a label set
        has one value per key)."""
        found = list(self._everywhere)
        by_pair, by_key = self._by_pair, self._by_key
        for pair in identity.pairs:
            found.extend(by_pair.get(pair, ()))
            found.extend(by_key.get(pair[0], ()))
        return found

    def on_identity_added(self, identity: labels.Labels) -> frozenset[str]:
        """Match a new label set against the selectors that can match it; return the keys it
        matches."""
        matched = frozenset(k for k, s in self._candidates(identity) if s.matches(identity))
        self.selectors_by_identity[identity] = matched
        for key in matched:
            self.identities_by_selector[key].add(identity)
        return matched

    def on_identity_removed(self, identity: labels.Labels) -> None:
        """Forget a label set no workload carries any more."""
        for key in self.selectors_by_identity.pop(identity, frozenset()):
            members = self.identities_by_selector[key]
            members.discard(identity)
            if not members:
                del self.identities_by_selector[key]

    def matching(self, identity: labels.Labels) -> frozenset[str]:
        """Selector keys matching a known identity."""
        return self.selectors_by_identity[identity]
