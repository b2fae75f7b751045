"""Ruleset documents as JSON bytes, fast: what the feed sends to a thousand agents at once.

Fed by the runtime's engine; feeds the ruleset long-poll. The canonical JSON is assembled from
fragments the model computes once per address set and per entry (`ruleset.canonical_json`), and a
whole document is remembered by its hash. The bytes parse to exactly `RulesetDocument.to_dict()`.
"""

from __future__ import annotations

from microseg.model import ruleset


class DocumentEncoder:
    """Encodes documents and remembers the latest ones by hash, up to `limit` bytes in all (whole
    documents at 10,000 agents would be gigabytes; a delta or a re-sent unchanged hash needs none)."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self._docs: dict[str, bytes] = {}
        self._size = 0

    def encode(self, doc: ruleset.RulesetDocument) -> bytes:
        """The document's JSON (compact, keys sorted, with its hash)."""
        found = self._docs.get(doc.hash)
        if found is None:
            found = ruleset.canonical_json(doc, with_hash=True).encode()
            if self._size + len(found) > self.limit:
                self._docs.clear()
                self._size = 0
            self._docs[doc.hash] = found
            self._size += len(found)
        return found
