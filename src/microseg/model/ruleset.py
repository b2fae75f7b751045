"""The ruleset document: what the control plane sends one workload's agent (the open JSON contract).

Compiled by the engine, rendered to nftables / iptables by `microseg.render`, and described by the
versioned JSON Schema in `docs/ruleset-v1.schema.json`. A document holds:

- the workload (name, addresses, mode) and the policy version;
- the tiers in evaluation order and the control-plane endpoints that are always allowed;
- named address sets (collapsed CIDRs) that entries refer to;
- `ingress` and `egress`: ordered entries. An entry matches when the peer address is in one of
  `peer_sets` (None = any peer), the local address is in one of `local_sets` (None = any local
  address of this workload), the protocol/port matches one of `ports`, and the time is inside
  [not_before, not_after). Inside a tier the first matching entry decides; `pass` and no match go to
  the next tier; after the last tier the default is deny.

`hash` is `sha256:` over the canonical JSON of everything else, except that each address set's
`networks` list is replaced by that set's own digest (`sha256:` over the canonical JSON array of its
networks). Any change shows, and a set shared by thousands of documents is hashed once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from microseg.errors import ValidationError
from microseg.model import addresses as ip
from microseg.model.estate import Endpoint
from microseg.model.rules import Action
from microseg.model.services import PortRange, PortSpec, Protocol
from microseg.model.workloads import Mode

SCHEMA = "microseg.io/ruleset/v1"
HEADER = ("controlPlane", "policyVersion", "schema", "tiers", "workload")
"""The members besides address sets, entries and the hash, in key order."""


@dataclass(frozen=True)
class AddressSet:
    """A named, collapsed list of networks; `description` says what it stands for (a selector)."""

    name: str
    networks: tuple[ip.Network, ...]
    description: str = ""

    @cached_property
    def digest(self) -> str:
        """`sha256:` over the canonical JSON array of the networks (computed once per set)."""
        return _sha256(json.dumps([str(n) for n in self.networks], separators=(",", ":")))

    @cached_property
    def fragments(self) -> tuple[str, str]:
        """This set as canonical JSON `"name":{...}`, with its networks and with its digest (a set
        shared by many documents is encoded once)."""
        full = {"description": self.description, "networks": [str(n) for n in self.networks]}
        short = {"description": self.description, "sha256": self.digest}
        name = json.dumps(self.name)
        return name + ":" + _canonical(full), name + ":" + _canonical(short)

    @property
    def v4(self) -> tuple[ip.Network, ...]:
        """The IPv4 members."""
        return tuple(n for n in self.networks if n.version == 4)

    @property
    def v6(self) -> tuple[ip.Network, ...]:
        """The IPv6 members."""
        return tuple(n for n in self.networks if n.version == 6)


@dataclass(frozen=True)
class Entry:
    """One ordered entry of an ingress or egress list; `ref` is the deciding rule's `tier/name`."""

    ref: str
    tier: str
    action: Action
    peer_sets: tuple[str, ...] | None
    local_sets: tuple[str, ...] | None
    ports: tuple[PortSpec, ...]
    process: str | None = None
    user: str | None = None
    not_before: int | None = None
    not_after: int | None = None

    @cached_property
    def text(self) -> str:
        """Canonical JSON of this entry (entries are shared by every workload of an identity, so
        each is encoded once, not once per document)."""
        return _canonical(_entry_json(self))


@dataclass(frozen=True)
class RulesetDocument:
    """Everything one agent needs to enforce policy on one workload."""

    workload: str
    addresses: tuple[ip.Network, ...]
    mode: Mode
    policy_version: str
    tiers: tuple[str, ...]
    control_plane: tuple[Endpoint, ...]
    address_sets: tuple[AddressSet, ...]
    ingress: tuple[Entry, ...]
    egress: tuple[Entry, ...]
    hash: str = field(default="", compare=False)

    def address_set(self, name: str) -> AddressSet:
        """The set called `name` (documents are validated to contain every referenced set)."""
        for s in self.address_sets:
            if s.name == name:
                return s
        raise KeyError(name)

    def with_hash(self) -> RulesetDocument:
        """A copy whose `hash` is computed from its content."""
        return replace(self, hash=content_hash(self))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see docs/ruleset-v1.schema.json)."""
        return {**_body(self), "hash": self.hash or content_hash(self)}

    def to_json(self) -> str:
        """Stable, indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RulesetDocument:
        """Parse the JSON form; raise ValidationError on anything malformed or a hash mismatch."""
        try:
            if data.get("schema") != SCHEMA:
                raise ValidationError(f"unknown ruleset schema {data.get('schema')!r}, expected {SCHEMA}")
            wl = data["workload"]
            doc = cls(
                workload=wl["name"],
                addresses=tuple(ip.network(a) for a in wl["addresses"]),
                mode=Mode(wl["mode"]),
                policy_version=data["policyVersion"],
                tiers=tuple(data["tiers"]),
                control_plane=tuple(
                    Endpoint(ip.network(e["cidr"]), _range_parse(e["port"]), Protocol(e["protocol"]))
                    for e in data["controlPlane"]
                ),
                address_sets=tuple(
                    AddressSet(name, tuple(ip.network(n) for n in s["networks"]), s.get("description", ""))
                    for name, s in sorted(data["addressSets"].items())
                ),
                ingress=tuple(_entry_parse(e) for e in data["ingress"]),
                egress=tuple(_entry_parse(e) for e in data["egress"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(f"malformed ruleset document: {exc!r}") from exc
        check_references(doc)
        expected = content_hash(doc, remember=False)  # its parts are its own: nothing to share
        given = data.get("hash")
        if given and given != expected:
            raise ValidationError(f"ruleset hash mismatch: document says {given}, content is {expected}")
        return replace(doc, hash=expected)

    @classmethod
    def from_json(cls, text: str) -> RulesetDocument:
        """Parse JSON text; text that is not JSON raises ValidationError too."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"ruleset document is not JSON: {exc}") from exc
        return cls.from_dict(data)


def check_references(doc: RulesetDocument) -> None:
    """Every set an entry names exists and every entry's tier is listed."""
    names = {s.name for s in doc.address_sets}
    for entry in (*doc.ingress, *doc.egress):
        for name in (*(entry.peer_sets or ()), *(entry.local_sets or ())):
            if name not in names:
                raise ValidationError(f"entry {entry.ref}: unknown address set {name!r}")
        if entry.tier not in doc.tiers:
            raise ValidationError(f"entry {entry.ref}: tier {entry.tier!r} is not in the tier list")


def content_hash(doc: RulesetDocument, *, remember: bool = True) -> str:
    """sha256 over the canonical JSON of the document without its hash, sets by their digests.

    `workload` is the last member in key order and everything before it is shared by the documents
    of one identity, so the hash state after that shared text is kept and copied: ten thousand
    documents cost one hash of each shared body and ten thousand hashes of a workload. Without
    `remember` nothing is kept: for a document whose parts no other document holds (a parsed
    one), keeping them would only keep them alive (an agent parsing a new 5,000-peer document per
    provision kept thousands of them)."""
    state = _shared(doc, digests=True, remember=remember)[1].copy()
    state.update(_workload_member(doc).encode())
    return "sha256:" + str(state.hexdigest())


def canonical_json(doc: RulesetDocument, *, digests: bool = False, with_hash: bool = False) -> str:
    """`json.dumps(body, sort_keys=True, separators=(",", ":"))` of the document, assembled from
    per-set and per-entry fragments that are computed once; `with_hash` adds the `hash` member
    (then it parses to `to_dict()`)."""
    if not with_hash:
        return _shared(doc, digests=digests)[0] + _workload_member(doc)
    members = _members(doc, digests=digests)
    members["workload"] = _canonical(_body_workload(doc))
    members["hash"] = json.dumps(doc.hash or content_hash(doc))
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in sorted(members.items())) + "}"


def _members(doc: RulesetDocument, *, digests: bool) -> dict[str, str]:
    """Every member but `workload` and `hash`, as canonical JSON text."""
    sets = sorted(doc.address_sets, key=lambda s: s.name)
    members = header_members(doc)
    del members["workload"]
    members["addressSets"] = "{" + ",".join(s.fragments[1 if digests else 0] for s in sets) + "}"
    members["egress"] = "[" + ",".join(e.text for e in doc.egress) + "]"
    members["ingress"] = "[" + ",".join(e.text for e in doc.ingress) + "]"
    return members


_SHARED: dict[tuple[object, ...], tuple[tuple[object, ...], str, Any]] = {}
"""(parts kept alive, text, sha256 state) of the body before `workload`, by the parts' identities."""


def _shared(doc: RulesetDocument, *, digests: bool, remember: bool = True) -> tuple[str, Any]:
    """The canonical text before the `workload` member, and the sha256 state after it."""
    parts = (doc.tiers, doc.control_plane, doc.ingress, doc.egress, *doc.address_sets)
    key = (digests, doc.policy_version, *map(id, parts))
    found = _SHARED.get(key)
    if found is None or any(a is not b for a, b in zip(found[0], parts, strict=True)):
        members = _members(doc, digests=digests)
        text = "{" + "".join(f"{json.dumps(k)}:{v}," for k, v in sorted(members.items()))
        found = (parts, text, hashlib.sha256(text.encode()))
        if remember:
            if len(_SHARED) >= 4096:
                _SHARED.clear()
            _SHARED[key] = found
    return found[1], found[2]


def _workload_member(doc: RulesetDocument) -> str:
    return '"workload":' + _canonical(_body_workload(doc)) + "}"


def header_members(doc: RulesetDocument, keys: tuple[str, ...] = HEADER) -> dict[str, str]:
    """The members other than sets, entries and hash (or those of `keys`), as canonical JSON text."""
    return {key: _HEADER_TEXT[key](doc) for key in keys}


def header_value(doc: RulesetDocument, key: str) -> object:
    """The model's value behind a header member, for comparing two documents without encoding."""
    if key == "workload":
        return doc.workload, doc.addresses, doc.mode
    return {
        "controlPlane": doc.control_plane,
        "policyVersion": doc.policy_version,
        "schema": SCHEMA,
        "tiers": doc.tiers,
    }[key]


_HEADER_TEXT = {
    "controlPlane": lambda doc: _canonical(_body_control_plane(doc)),
    "policyVersion": lambda doc: json.dumps(doc.policy_version),
    "schema": lambda doc: json.dumps(SCHEMA),
    "tiers": lambda doc: _canonical(list(doc.tiers)),
    "workload": lambda doc: _canonical(_body_workload(doc)),
}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _body_workload(doc: RulesetDocument) -> dict[str, Any]:
    return {"name": doc.workload, "addresses": [str(a) for a in doc.addresses], "mode": doc.mode.value}


def _body_control_plane(doc: RulesetDocument) -> list[dict[str, Any]]:
    return [
        {"cidr": str(e.network), "port": _range_json(e.port), "protocol": e.protocol.value}
        for e in doc.control_plane
    ]


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _body(doc: RulesetDocument, *, digests: bool = False) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "workload": _body_workload(doc),
        "policyVersion": doc.policy_version,
        "tiers": list(doc.tiers),
        "controlPlane": _body_control_plane(doc),
        "addressSets": {
            s.name: {"description": s.description, "sha256": s.digest}
            if digests
            else {"description": s.description, "networks": [str(n) for n in s.networks]}
            for s in sorted(doc.address_sets, key=lambda s: s.name)
        },
        "ingress": [_entry_json(e) for e in doc.ingress],
        "egress": [_entry_json(e) for e in doc.egress],
    }


def _range_json(r: PortRange) -> int | list[int]:
    return r.first if r.first == r.last else [r.first, r.last]


def _range_parse(value: int | list[int]) -> PortRange:
    if isinstance(value, int):
        return PortRange(value, value)
    first, last = value
    return PortRange(int(first), int(last))


def _entry_json(e: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ref": e.ref,
        "tier": e.tier,
        "action": e.action.value,
        "peerSets": None if e.peer_sets is None else list(e.peer_sets),
        "localSets": None if e.local_sets is None else list(e.local_sets),
        "ports": [
            {"protocol": p.protocol.value, "ports": [_range_json(r) for r in p.ports]} for p in e.ports
        ],
    }
    for key, value in (
        ("process", e.process),
        ("user", e.user),
        ("notBefore", e.not_before),
        ("notAfter", e.not_after),
    ):
        if value is not None:
            out[key] = value
    return out


def _entry_parse(d: dict[str, Any]) -> Entry:
    return Entry(
        ref=d["ref"],
        tier=d["tier"],
        action=Action(d["action"]),
        peer_sets=None if d["peerSets"] is None else tuple(d["peerSets"]),
        local_sets=None if d["localSets"] is None else tuple(d["localSets"]),
        ports=tuple(
            PortSpec(Protocol(p["protocol"]), tuple(_range_parse(r) for r in p["ports"])) for p in d["ports"]
        ),
        process=d.get("process"),
        user=d.get("user"),
        not_before=d.get("notBefore"),
        not_after=d.get("notAfter"),
    )
