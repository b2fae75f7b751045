"""`render_member_update`: element commands exactly when only address-set members moved (pure; the
kernel-level equivalence with a whole load is tests/agent/test_member_updates.py)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from dataclasses import replace

from microseg.model import addresses, ruleset
from microseg.render import nftables
from tests.render import documents


def _doc(*clients: str, dbs: tuple[str, ...] = ("10.77.5.1",)) -> ruleset.RulesetDocument:
    doc = documents.document(
        ingress=(documents.entry("application/web", documents.ALLOW, documents.spec(documents.TCP, 80),
                                 peers=("clients",)),),
        egress=(documents.entry("application/db", documents.ALLOW, documents.spec(documents.TCP, 5432),
                                peers=("dbs",)),),
        sets=(documents.aset("clients", *clients), documents.aset("dbs", *dbs)),
    )  # fmt: skip
    return replace(doc, hash="").with_hash()


def test_a_moved_member_is_one_delete_and_one_add_in_the_renderers_spelling() -> None:
    old, new = _doc("10.77.1.1", "10.77.1.8"), _doc("10.77.1.1", "10.77.1.9", "fd77::1")
    assert nftables.render_member_update(old, new) is None  # the v6 family of clients appears
    new = _doc("10.77.1.1", "10.77.1.9")
    assert nftables.render_member_update(old, new) == (
        "delete element inet microseg clients_v4 { 10.77.1.8 }\n"
        "add element inet microseg clients_v4 { 10.77.1.9 }\n"
    )


def test_merged_neighbours_are_replaced_by_their_prefix() -> None:
    old, new = _doc("10.77.1.0", "10.77.1.2"), _doc("10.77.1.0", "10.77.1.1", "10.77.1.2")
    assert nftables.render_member_update(old, new) == (
        "delete element inet microseg clients_v4 { 10.77.1.0 }\n"
        "add element inet microseg clients_v4 { 10.77.1.0/31 }\n"
    )


def test_anything_but_members_needs_the_whole_table() -> None:
    old = _doc("10.77.1.1")
    assert nftables.render_member_update(old, _doc("10.77.1.1", dbs=())) is None  # a family empties
    other_entry = replace(old, ingress=(replace(old.ingress[0], ports=(documents.spec(documents.TCP, 81),)),))
    assert nftables.render_member_update(old, other_entry.with_hash()) is None
    assert nftables.render_member_update(old, replace(old, policy_version="v8").with_hash()) is None
    assert nftables.render_member_update(old, replace(old, tiers=("application",)).with_hash()) is None
    renamed = replace(old, address_sets=(*old.address_sets, documents.aset("more", "10.77.9.9"))).with_hash()
    assert nftables.render_member_update(old, renamed) is None


def test_a_description_change_changes_nothing_in_the_kernel() -> None:
    old = _doc("10.77.1.1")
    described = ruleset.AddressSet("clients", (addresses.network("10.77.1.1"),), "other words")
    new = replace(old, address_sets=(described, old.address_sets[1])).with_hash()
    assert new.hash != old.hash and nftables.render_member_update(old, new) == ""


def _peers(first: int, count: int = 2000) -> tuple[str, ...]:
    """`count` addresses two apart (none merge), from the `first`-th."""
    return tuple(f"10.{60 + (first + 2 * i) // 65_536}.{(first + 2 * i) // 256 % 256}.{(first + 2 * i) % 256}"
                 for i in range(count))  # fmt: skip


def test_a_long_run_of_updates_keeps_only_the_last_documents_members() -> None:
    """An agent parses a document and makes one update per provision for weeks: what parsing and
    rendering keep between updates must not grow with their number (a large set's members hold
    thousands of network objects)."""
    sent = [_doc(*_peers(step)).to_json() for step in range(13)]  # another set each time
    held: list[int] = []
    old = ruleset.RulesetDocument.from_dict(json.loads(sent[0]))
    tracemalloc.start()
    try:
        for text in sent[1:]:
            new = ruleset.RulesetDocument.from_dict(json.loads(text))  # as the agent has it
            assert nftables.render_member_update(old, new)
            old = new
            gc.collect()
            held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert held[-1] < held[1] * 1.2, held  # flat after the first updates, not one document more each
