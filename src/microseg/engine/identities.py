"""Identities: workloads with the same security-relevant labels share one computation.

Fed by workload changes (effective labels per workload); feeds the label index (new and vanished
label sets) and the compiler (one ruleset per identity). Security-relevant labels are the keys
some selector looks at, plus `quarantine`; other labels never change a verdict, so they do not
split identities (as in Cilium).

What it deliberately does not do: match selectors or compute rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from microseg.model import labels


class IdentityTable:
    """Members per identity and identity per workload."""

    def __init__(
        self,
        relevant_keys: frozenset[str],
        on_identity_added: Callable[[labels.Labels], object],
        on_identity_removed: Callable[[labels.Labels], None],
    ) -> None:
        self._keys = relevant_keys
        self._on_added = on_identity_added
        self._on_removed = on_identity_removed
        self.members: dict[labels.Labels, set[str]] = defaultdict(set)
        self.identity_of: dict[str, labels.Labels] = {}

    def identity_for(self, effective: labels.Labels) -> labels.Labels:
        """The security-relevant part of a label set."""
        return effective.only(self._keys)

    def assign(self, workload: str, effective: labels.Labels) -> tuple[labels.Labels | None, labels.Labels]:
        """Put `workload` in the identity of `effective`; return (old identity or None, new identity)."""
        new = self.identity_for(effective)
        old = self.identity_of.get(workload)
        if old == new:
            return old, new
        if old is not None:
            self._leave(workload, old)
        if new not in self.members:
            self._on_added(new)
        self.members[new].add(workload)
        self.identity_of[workload] = new
        return old, new

    def release(self, workload: str) -> labels.Labels | None:
        """Take `workload` out; return the identity it had."""
        old = self.identity_of.pop(workload, None)
        if old is not None:
            self._leave(workload, old)
        return old

    def _leave(self, workload: str, identity: labels.Labels) -> None:
        members = self.members[identity]
        members.discard(workload)
        if not members:
            del self.members[identity]
            self._on_removed(identity)
