"""The label index: which selectors match which identities, kept current as workloads change.

Fed by the rule book (the distinct selectors, each once however many rules use it) and by the
identity table (label sets appearing and disappearing); feeds the compiler and address sets via
`selectors_by_identity` / `identities_by_selector`.

What it deliberately does not do: know workloads or addresses. It matches label sets, so 200
replicas with the same labels cost one match per selector.
"""

from __future__ import annotations

from collections import defaultdict

from microseg.model import labels, selectors


class LabelIndex:
    """Paired indexes selector key <-> identity labels."""

    def __init__(self, selector_map: dict[str, selectors.LabelSelector]) -> None:
        self._selectors = dict(sorted(selector_map.items()))
        self.selectors_by_identity: dict[labels.Labels, frozenset[str]] = {}
        self.identities_by_selector: dict[str, set[labels.Labels]] = defaultdict(set)

    def on_identity_added(self, identity: labels.Labels) -> frozenset[str]:
        """Match a new label set against every selector once; return the keys it matches."""
        matched = frozenset(k for k, s in self._selectors.items() if s.matches(identity))
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
