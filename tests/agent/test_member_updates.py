"""Set-member changes applied as nftables element commands, against real nftables in ms- namespaces:
any sequence of member changes leaves the kernel holding what a whole load of the last document
holds (the table's comment aside: it names a hash and cannot be changed in place), the element path
is taken exactly when only members moved, and the tamper check afterwards neither alarms falsely nor
misses a change made behind our back."""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg import settings as config
from microseg.agent import dataplane, netns
from microseg.model import addresses, ruleset
from microseg.render import nftables as nft_render
from tests.render import documents
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

pytestmark = pytest.mark.netns
SETS = ("admins", "clients", "dbs")
POOL_V4 = [
    *(f"10.77.1.{i}" for i in range(16)),  # neighbours merge into prefixes, and split again
    "10.77.2.0/30", "10.77.2.0/29", "10.77.2.8/31", "10.77.3.0/24", "10.77.3.128/25",
]  # fmt: skip
POOL_V6 = [*(f"fd77::{i:x}" for i in range(8)), "fd77:1::/64", "fd77:1::/65"]
POOL = [addresses.network(n) for n in (*POOL_V4, *POOL_V6)]
_TABLE_COMMENT = re.compile(r'^\tcomment "[^"]*"$', re.MULTILINE)


@pytest.fixture(scope="module")
def spaces() -> Iterator[tuple[str, str]]:
    """Two empty ms- namespaces: one is updated step by step, the other loads documents whole."""
    require_root_tools("nft", "ip")
    tag = secrets.token_hex(3)
    names = (f"ms-mu{tag}-a", f"ms-mu{tag}-b")
    try:
        for name in names:
            labnet.run("ip", "netns", "add", name)
        yield names
    finally:
        for name in names:
            labnet.run("ip", "netns", "del", name, check=False)


def _document(members: dict[str, frozenset[addresses.Network]]) -> ruleset.RulesetDocument:
    """Fixed rules over the three sets; only the members vary."""
    sets = tuple(
        ruleset.AddressSet(name, tuple(addresses.collapse(members[name])), f"set {name}") for name in SETS
    )
    doc = documents.document(
        ingress=(
            documents.entry(
                "security/no-dbs", documents.DENY, documents.spec(documents.TCP, 22), peers=("dbs",)
            ),
            documents.entry(
                "application/web",
                documents.ALLOW,
                documents.spec(documents.TCP, 80),
                peers=("clients", "admins"),
            ),
        ),
        egress=(
            documents.entry(
                "application/db",
                documents.ALLOW,
                documents.spec(documents.TCP, 5432),
                peers=("dbs",),
                local=("admins",),
            ),
        ),
        sets=sets,
        workload="lab-b",
    )
    return replace(doc, hash="").with_hash()


def _listing(plane: dataplane.NftDataplane) -> str:
    """The table as nft lists it (stateless), without the table's comment."""
    found = plane.nft.list_table("inet", plane.settings.table)
    assert found is not None
    return _TABLE_COMMENT.sub("", found)


members_st = st.fixed_dictionaries({name: st.frozensets(st.sampled_from(POOL), max_size=8) for name in SETS})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=members_st, steps=st.lists(members_st, min_size=1, max_size=5))
def test_member_changes_leave_what_a_whole_load_of_the_last_document_leaves(
    spaces: tuple[str, str],
    first: dict[str, frozenset[addresses.Network]],
    steps: list[dict[str, frozenset[addresses.Network]]],
) -> None:
    docs = [_document(first), *(_document(m) for m in steps)]

    def stepwise() -> tuple[str, int, list[bool]]:
        plane = dataplane.NftDataplane(config.RenderSettings())
        plane.apply(docs[0], {}, {})
        eligible = []
        for before, after in itertools.pairwise(docs):
            eligible.append(nft_render.render_member_update(before, after, plane.settings) is not None)
            plane.apply(after, {}, {})
            assert plane.check() is None  # no false alarm after an update
        return _listing(plane), plane.member_updates, eligible

    def whole() -> str:
        plane = dataplane.NftDataplane(config.RenderSettings())
        plane.apply(docs[-1], {}, {})
        return _listing(plane)

    updated, member_updates, eligible = netns.run_in(spaces[0], stepwise)
    assert member_updates == sum(eligible)  # every members-only change went the element path
    assert updated == netns.run_in(spaces[1], whole)


def test_a_one_member_change_goes_the_element_path_and_tampering_is_still_seen(
    spaces: tuple[str, str],
) -> None:
    base = {name: frozenset(addresses.network(f"10.77.1.{i}") for i in (1, 3, 5)) for name in SETS}
    old = _document(base)
    new = _document({**base, "clients": base["clients"] | {addresses.network("10.77.1.7")}})

    def body() -> None:
        plane = dataplane.NftDataplane(config.RenderSettings())
        plane.apply(old, {}, {})
        plane.apply(new, {}, {})
        assert plane.member_updates == 1
        assert plane.check() is None
        _tamper(spaces[0], "add", "element", "inet", "microseg", "clients_v4", "{ 10.77.1.9 }")
        drift = plane.check()
        assert drift is not None and any("10.77.1.9" in line for line in drift.changes)
        plane.restore()  # the whole table of `new`, rendered again
        assert plane.check() is None
        assert "10.77.1.9" not in _listing(plane) and "10.77.1.7" in _listing(plane)

    netns.run_in(spaces[0], body)


def test_a_table_changed_behind_our_back_is_loaded_whole_not_patched(spaces: tuple[str, str]) -> None:
    base = {name: frozenset({addresses.network("10.77.1.1")}) for name in SETS}
    old = _document(base)
    new = _document({**base, "dbs": frozenset({addresses.network("10.77.1.2")})})

    def body() -> None:
        plane = dataplane.NftDataplane(config.RenderSettings())
        plane.apply(old, {}, {})
        _tamper(spaces[0], "add", "element", "inet", "microseg", "clients_v4", "{ 10.77.1.9 }")
        plane.apply(new, {}, {})
        assert plane.member_updates == 0  # the stray element must not survive a patch
        assert "10.77.1.9" not in _listing(plane) and plane.check() is None

    netns.run_in(spaces[0], body)


def _tamper(space: str, *args: str) -> None:
    """An nft command in `space`, as someone other than the agent would run it."""
    labnet.run("nsenter", f"--net=/run/netns/{space}", "nft", *args)
