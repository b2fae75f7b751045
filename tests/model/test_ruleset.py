"""The ruleset document: JSON round trips, the content hash, and what from_dict refuses."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses, estate, rules, ruleset, services, workloads
from tests.model import strategies as gen

P = services.Protocol
A = rules.Action
NET = addresses.network


def spec(protocol: services.Protocol, *ports: int | tuple[int, int]) -> services.PortSpec:
    ranges = tuple(services.PortRange(p, p) if isinstance(p, int) else services.PortRange(*p) for p in ports)
    return services.PortSpec(protocol, ranges)


def aset(name: str, *nets: str, description: str = "") -> ruleset.AddressSet:
    return ruleset.AddressSet(name, tuple(NET(n) for n in nets), description)


def sample() -> ruleset.RulesetDocument:
    """A document that uses every field at least once."""
    return ruleset.RulesetDocument(
        workload="web-1",
        addresses=(NET("10.0.0.5"), NET("2001:db8::5")),
        mode=workloads.Mode.ENFORCE,
        policy_version="v7",
        tiers=("quarantine", "security", "application"),
        control_plane=(estate.Endpoint(NET("10.0.250.9"), services.PortRange(8443, 8443)),),
        address_sets=(
            aset("admins", "10.0.9.0/24", description="{role=admin}"),
            aset("clients", "10.0.1.0/24", "2001:db8:1::/48", description="iplist:clients"),
            aset("vips", "10.0.0.100"),
        ),
        ingress=(
            ruleset.Entry("security/ssh-admins", "security", A.PASS, ("admins",), None, (spec(P.TCP, 22),)),
            ruleset.Entry("security/no-ssh", "security", A.DENY, None, None, (spec(P.TCP, 22),)),
            ruleset.Entry(
                "application/web",
                "application",
                A.ALLOW,
                ("clients",),
                ("vips",),
                (spec(P.TCP, 80, (8000, 8100)), spec(P.ICMP)),
                process="nginx",
                user="www-data",
                not_before=1767225600,
                not_after=1769904000,
            ),
        ),
        egress=(
            ruleset.Entry(
                "application/dns", "application", A.ALLOW, None, None, (spec(P.UDP, 53), spec(P.ANY))
            ),
        ),
    )


def test_to_dict_shape() -> None:
    data = sample().to_dict()
    assert list(data) == [
        "schema",
        "workload",
        "policyVersion",
        "tiers",
        "controlPlane",
        "addressSets",
        "ingress",
        "egress",
        "hash",
    ]
    assert data["schema"] == "microseg.io/ruleset/v1"
    assert data["workload"] == {
        "name": "web-1",
        "addresses": ["10.0.0.5/32", "2001:db8::5/128"],
        "mode": "enforce",
    }
    assert data["controlPlane"] == [{"cidr": "10.0.250.9/32", "port": 8443, "protocol": "tcp"}]
    assert data["addressSets"]["clients"] == {
        "description": "iplist:clients",
        "networks": ["10.0.1.0/24", "2001:db8:1::/48"],
    }
    assert data["ingress"][0] == {
        "ref": "security/ssh-admins",
        "tier": "security",
        "action": "pass",
        "peerSets": ["admins"],
        "localSets": None,
        "ports": [{"protocol": "tcp", "ports": [22]}],
    }
    assert data["ingress"][2]["ports"] == [
        {"protocol": "tcp", "ports": [80, [8000, 8100]]},
        {"protocol": "icmp", "ports": []},
    ]
    assert {k: data["ingress"][2][k] for k in ("process", "user", "notBefore", "notAfter")} == {
        "process": "nginx",
        "user": "www-data",
        "notBefore": 1767225600,
        "notAfter": 1769904000,
    }
    assert data["hash"] == ruleset.content_hash(sample())


def test_json_round_trip_of_the_sample() -> None:
    doc = sample()
    back = ruleset.RulesetDocument.from_json(doc.to_json())
    assert back == doc
    assert back.hash == ruleset.content_hash(doc)
    assert back.to_json() == doc.to_json()


@settings(max_examples=60, deadline=None)
@given(gen.documents())
def test_json_round_trip(doc: ruleset.RulesetDocument) -> None:
    text = doc.to_json()
    back = ruleset.RulesetDocument.from_json(text)
    assert back == doc
    assert back.hash == doc.with_hash().hash
    assert back.to_json() == text


def test_sets_are_keyed_by_name_so_their_order_carries_no_meaning() -> None:
    doc = sample()
    shuffled = replace(doc, address_sets=tuple(reversed(doc.address_sets)))
    assert ruleset.content_hash(shuffled) == ruleset.content_hash(doc)
    assert shuffled.to_json() == doc.to_json()
    assert ruleset.RulesetDocument.from_json(shuffled.to_json()) == doc


def test_hash_is_stable_and_well_formed() -> None:
    first, second = sample().with_hash(), sample().with_hash()
    assert first.hash == second.hash == ruleset.content_hash(sample())
    assert first.hash.startswith("sha256:") and len(first.hash) == len("sha256:") + 64
    assert first.with_hash().hash == first.hash, "the hash does not cover itself"
    assert replace(first, hash="sha256:" + "0" * 64).to_dict()["hash"] == "sha256:" + "0" * 64


def documented_hash(doc: ruleset.RulesetDocument) -> str:
    """docs/ruleset.md, re-implemented from the prose: sha256 over the canonical JSON (sorted keys, no
    whitespace, non-ASCII escaped) of the document without `hash`, where each set's `networks` is
    replaced by `sha256` = the digest of the compact JSON array of its networks."""
    data = doc.to_dict()
    del data["hash"]
    for body in data["addressSets"].values():
        networks = json.dumps(body.pop("networks"), separators=(",", ":"))
        body["sha256"] = "sha256:" + hashlib.sha256(networks.encode()).hexdigest()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_hash_follows_the_documented_algorithm() -> None:
    assert sample().with_hash().hash == documented_hash(sample())
    unicode = replace(
        sample(),
        address_sets=(aset("admins", "10.0.9.0/24", description="{rôle=ädmin}"), *sample().address_sets[1:]),
    )
    assert unicode.with_hash().hash == documented_hash(unicode)


@settings(max_examples=40, deadline=None)
@given(gen.documents())
def test_hash_follows_the_documented_algorithm_for_any_document(doc: ruleset.RulesetDocument) -> None:
    assert doc.with_hash().hash == documented_hash(doc)


def test_address_set_digest_and_families() -> None:
    s = aset("mixed", "10.0.0.0/24", "2001:db8::/32", "192.168.1.1")
    expected = hashlib.sha256(b'["10.0.0.0/24","2001:db8::/32","192.168.1.1/32"]').hexdigest()
    assert s.digest == "sha256:" + expected
    assert [str(n) for n in s.v4] == ["10.0.0.0/24", "192.168.1.1/32"]
    assert [str(n) for n in s.v6] == ["2001:db8::/32"]


def test_address_set_lookup() -> None:
    doc = sample()
    assert doc.address_set("vips").networks == (NET("10.0.0.100"),)
    with pytest.raises(KeyError):
        doc.address_set("missing")


def _entry(doc: ruleset.RulesetDocument, **changes: Any) -> ruleset.RulesetDocument:
    """`doc` with its last ingress entry changed."""
    return replace(doc, ingress=(*doc.ingress[:-1], replace(doc.ingress[-1], **changes)))


def _set(doc: ruleset.RulesetDocument, **changes: Any) -> ruleset.RulesetDocument:
    """`doc` with its first address set changed."""
    return replace(doc, address_sets=(replace(doc.address_sets[0], **changes), *doc.address_sets[1:]))


MUTATIONS: dict[str, Callable[[ruleset.RulesetDocument], ruleset.RulesetDocument]] = {
    "workload": lambda d: replace(d, workload="web-2"),
    "workload-address": lambda d: replace(d, addresses=(NET("10.0.0.6"), NET("2001:db8::5"))),
    "mode": lambda d: replace(d, mode=workloads.Mode.ALERT),
    "policy-version": lambda d: replace(d, policy_version="v8"),
    "tier-order": lambda d: replace(d, tiers=("quarantine", "application", "security")),
    "control-plane-port": lambda d: replace(
        d, control_plane=(estate.Endpoint(NET("10.0.250.9"), services.PortRange(8443, 8444)),)
    ),
    "control-plane-protocol": lambda d: replace(
        d, control_plane=(estate.Endpoint(NET("10.0.250.9"), services.PortRange(8443, 8443), P.UDP),)
    ),
    "set-member": lambda d: _set(d, networks=(NET("10.0.8.0/24"),)),
    "set-member-order": lambda d: replace(
        d,
        address_sets=(
            d.address_sets[0],
            replace(d.address_sets[1], networks=d.address_sets[1].networks[::-1]),
            d.address_sets[2],
        ),
    ),
    "set-emptied": lambda d: _set(d, networks=()),
    "set-description": lambda d: _set(d, description="{role=root}"),
    "set-added": lambda d: replace(d, address_sets=(*d.address_sets, aset("zz"))),
    "entry-ref": lambda d: _entry(d, ref="application/www"),
    "entry-action": lambda d: _entry(d, action=A.DENY),
    "entry-peers-any": lambda d: _entry(d, peer_sets=None),
    "entry-peers-none": lambda d: _entry(d, peer_sets=()),
    "entry-local-any": lambda d: _entry(d, local_sets=None),
    "entry-port": lambda d: _entry(d, ports=(spec(P.TCP, 81, (8000, 8100)), spec(P.ICMP))),
    "entry-protocol": lambda d: _entry(d, ports=(spec(P.UDP, 80, (8000, 8100)), spec(P.ICMP))),
    "entry-process": lambda d: _entry(d, process="httpd"),
    "entry-process-dropped": lambda d: _entry(d, process=None),
    "entry-user": lambda d: _entry(d, user="nobody"),
    "entry-not-before": lambda d: _entry(d, not_before=1767225601),
    "entry-not-after-dropped": lambda d: _entry(d, not_after=None),
    "entry-tier": lambda d: _entry(d, tier="security"),
    "entry-order": lambda d: replace(d, ingress=d.ingress[::-1]),
    "entry-moved-to-egress": lambda d: replace(d, ingress=d.ingress[:-1], egress=(*d.egress, d.ingress[-1])),
    "ingress-and-egress-swapped": lambda d: replace(d, ingress=d.egress, egress=d.ingress),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_hash_changes_when_any_field_changes(
    mutate: Callable[[ruleset.RulesetDocument], ruleset.RulesetDocument],
) -> None:
    doc = sample()
    changed = mutate(doc)
    assert changed != doc
    assert ruleset.content_hash(changed) != ruleset.content_hash(doc)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.__setitem__("hash", "sha256:" + "0" * 64),
        lambda d: d["workload"].__setitem__("mode", "visibility"),
        lambda d: d["addressSets"]["clients"]["networks"].append("0.0.0.0/0"),
        lambda d: d["ingress"][1].__setitem__("action", "allow"),
        lambda d: d["ingress"][2].pop("notAfter"),
    ],
    ids=["hash-replaced", "mode-changed", "set-widened", "deny-turned-allow", "window-opened"],
)
def test_from_dict_rejects_a_tampered_document(tamper: Callable[[dict[str, Any]], object]) -> None:
    data = sample().to_dict()
    tamper(data)
    with pytest.raises(ValidationError, match="hash mismatch"):
        ruleset.RulesetDocument.from_dict(data)


def test_from_dict_without_a_hash_computes_it() -> None:
    data = sample().to_dict()
    del data["hash"]
    assert ruleset.RulesetDocument.from_dict(data).hash == ruleset.content_hash(sample())


@pytest.mark.parametrize(
    "schema",
    ["microseg.io/ruleset/v2", "microseg.io/ruleset", "", None],
    ids=["v2", "unversioned", "empty", "missing"],
)
def test_from_dict_rejects_an_unknown_schema(schema: str | None) -> None:
    data = sample().to_dict()
    if schema is None:
        del data["schema"]
    else:
        data["schema"] = schema
    with pytest.raises(ValidationError, match="unknown ruleset schema"):
        ruleset.RulesetDocument.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("peerSets", ["admins", "nope"]), ("localSets", ["nope"])],
    ids=["peer-set", "local-set"],
)
def test_from_dict_rejects_an_unknown_set_reference(field: str, value: list[str]) -> None:
    data = sample().to_dict()
    data["egress"][0][field] = value
    del data["hash"]
    with pytest.raises(ValidationError, match="unknown address set 'nope'"):
        ruleset.RulesetDocument.from_dict(data)


def test_from_dict_rejects_an_entry_tier_missing_from_the_tier_list() -> None:
    data = sample().to_dict()
    data["tiers"] = ["quarantine", "application"]
    with pytest.raises(ValidationError, match="tier 'security' is not in the tier list"):
        ruleset.RulesetDocument.from_dict(data)


def test_check_references_on_built_documents() -> None:
    ruleset.check_references(sample())
    with pytest.raises(ValidationError, match="unknown address set"):
        ruleset.check_references(_entry(sample(), local_sets=("ghost",)))
    with pytest.raises(ValidationError, match="not in the tier list"):
        ruleset.check_references(replace(sample(), tiers=("security",)))


def _without(path: tuple[str | int, ...]) -> Callable[[Any], None]:
    def drop(data: Any) -> None:
        for step in path[:-1]:
            data = data[step]
        del data[path[-1]]

    return drop


def _setting(path: tuple[str | int, ...], value: object) -> Callable[[Any], None]:
    def put(data: Any) -> None:
        for step in path[:-1]:
            data = data[step]
        data[path[-1]] = value

    return put


MALFORMED: dict[str, Callable[[Any], None]] = {
    "no-workload": _without(("workload",)),
    "no-workload-mode": _without(("workload", "mode")),
    "no-ingress": _without(("ingress",)),
    "no-entry-ports": _without(("ingress", 0, "ports")),
    "no-peer-sets-key": _without(("ingress", 0, "peerSets")),
    "workload-not-an-object": _setting(("workload",), "web-1"),
    "address-sets-a-list": _setting(("addressSets",), []),
    "address-set-a-list": _setting(("addressSets", "vips"), ["10.0.0.100/32"]),
    "entry-a-list": _setting(("ingress", 0), ["security/ssh-admins"]),
    "bad-mode": _setting(("workload", "mode"), "block"),
    "bad-action": _setting(("ingress", 0, "action"), "reject"),
    "bad-protocol": _setting(("ingress", 0, "ports", 0, "protocol"), "gre"),
    "port-zero": _setting(("ingress", 0, "ports", 0, "ports"), [0]),
    "port-range-reversed": _setting(("ingress", 0, "ports", 0, "ports"), [[90, 80]]),
    "port-range-three-items": _setting(("ingress", 0, "ports", 0, "ports"), [[80, 90, 100]]),
    "icmp-with-ports": _setting(("ingress", 2, "ports", 1, "ports"), [8]),
    "bad-address": _setting(("workload", "addresses"), ["10.0.0.300/32"]),
    "host-bits-set": _setting(("addressSets", "vips", "networks"), ["10.0.0.1/24"]),
    "control-plane-port-missing": _without(("controlPlane", 0, "port")),
}


@pytest.mark.parametrize("damage", MALFORMED.values(), ids=MALFORMED.keys())
def test_from_dict_rejects_malformed_documents(damage: Callable[[Any], None]) -> None:
    data = copy.deepcopy(sample().to_dict())
    damage(data)
    with pytest.raises(ValidationError):
        ruleset.RulesetDocument.from_dict(data)


@pytest.mark.parametrize(
    "text", ["[]", '"ruleset"', "null", "{}"], ids=["list", "string", "null", "empty-object"]
)
def test_from_json_rejects_documents_that_are_not_objects(text: str) -> None:
    with pytest.raises(ValidationError):
        ruleset.RulesetDocument.from_json(text)


def test_from_json_rejects_broken_json() -> None:
    with pytest.raises(ValidationError, match="not JSON"):
        ruleset.RulesetDocument.from_json('{"schema": ')


def test_single_port_ranges_may_be_written_either_way() -> None:
    data = sample().to_dict()
    data["egress"][0]["ports"][0]["ports"] = [[53, 53]]
    assert ruleset.RulesetDocument.from_dict(data) == sample()


@settings(max_examples=40, deadline=None)
@given(gen.documents(), st.lists(st.tuples(st.sampled_from(["a", "b", "ü"]), gen.host_networks), max_size=4))
def test_documents_sharing_their_body_still_hash_by_the_documented_algorithm(
    doc: ruleset.RulesetDocument, others: list[tuple[str, Any]]
) -> None:
    """Documents of one identity share every part but the workload (the engine's case): each one's
    hash is still its own content's, also after another changed what the shared parts are."""
    for name, address in others:
        twin = replace(doc, workload=name, addresses=(address,))
        assert twin.with_hash().hash == documented_hash(twin)
        moved = replace(twin, policy_version="v99")
        assert moved.with_hash().hash == documented_hash(moved)
    assert doc.with_hash().hash == documented_hash(doc)
