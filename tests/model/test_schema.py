"""docs/ruleset-v1.schema.json: a valid 2020-12 schema that exactly describes `RulesetDocument.to_dict()`,
shipped unchanged as package data, with the example in docs/ruleset.md valid against both."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings

from microseg.model import addresses, rules, ruleset, services, workloads
from tests.model import strategies as gen
from tests.model.test_ruleset import sample

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "ruleset-v1.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def errors(instance: object) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(instance)]


def defined(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the schema's `$defs`."""
    return jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{name}"})


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://microseg.io/schemas/ruleset/v1.json"


def test_packaged_schema_is_identical_to_the_documented_one() -> None:
    packaged = importlib.resources.files("microseg").joinpath("schemas/ruleset-v1.json")
    assert packaged.read_bytes() == SCHEMA_FILE.read_bytes()


def test_schema_version_and_enums_follow_the_model() -> None:
    props, defs = SCHEMA["properties"], SCHEMA["$defs"]
    assert props["schema"]["const"] == ruleset.SCHEMA
    assert props["workload"]["properties"]["mode"]["enum"] == [m.value for m in workloads.Mode]
    assert defs["entry"]["properties"]["action"]["enum"] == [a.value for a in rules.Action]
    assert defs["protocol"]["enum"] == [p.value for p in services.Protocol]
    no_ports = defs["portSpec"]["if"]["properties"]["protocol"]["enum"]
    assert no_ports == [p.value for p in services.Protocol if not p.has_ports]


def test_sample_document_is_valid() -> None:
    assert errors(sample().to_dict()) == []


@settings(max_examples=60, deadline=None)
@given(gen.documents())
def test_every_document_is_valid(doc: ruleset.RulesetDocument) -> None:
    assert errors(doc.to_dict()) == []


def test_schema_names_every_key_to_dict_writes() -> None:
    data = sample().to_dict()
    defs = SCHEMA["$defs"]
    assert set(SCHEMA["properties"]) == set(SCHEMA["required"]) == set(data)
    assert set(SCHEMA["properties"]["workload"]["properties"]) == set(data["workload"])
    assert set(defs["endpoint"]["properties"]) == set(data["controlPlane"][0])
    assert set(defs["addressSet"]["properties"]) == set(data["addressSets"]["clients"])
    assert set(defs["entry"]["properties"]) == set(data["ingress"][2])
    assert set(defs["entry"]["required"]) == set(data["ingress"][0])
    assert set(defs["portSpec"]["properties"]) == set(data["ingress"][0]["ports"][0])


def at(path: tuple[str | int, ...], value: object) -> Callable[[Any], None]:
    def put(data: Any) -> None:
        for step in path[:-1]:
            data = data[step]
        data[path[-1]] = value

    return put


def without(path: tuple[str | int, ...]) -> Callable[[Any], None]:
    def drop(data: Any) -> None:
        for step in path[:-1]:
            data = data[step]
        del data[path[-1]]

    return drop


INVALID: dict[str, Callable[[Any], None]] = {
    "extra-top-level-key": at(("extra",), 1),
    "extra-workload-key": at(("workload", "labels"), {}),
    "extra-entry-key": at(("ingress", 0, "comment"), "x"),
    "extra-port-spec-key": at(("ingress", 0, "ports", 0, "name"), "ssh"),
    "extra-set-key": at(("addressSets", "vips", "v6"), []),
    "extra-endpoint-key": at(("controlPlane", 0, "host"), "cp"),
    "missing-hash": without(("hash",)),
    "missing-egress": without(("egress",)),
    "missing-peer-sets": without(("ingress", 0, "peerSets")),
    "missing-set-description": without(("addressSets", "vips", "description")),
    "schema-v2": at(("schema",), "microseg.io/ruleset/v2"),
    "mode-block": at(("workload", "mode"), "block"),
    "action-reject": at(("ingress", 0, "action"), "reject"),
    "protocol-gre": at(("ingress", 0, "ports", 0, "protocol"), "gre"),
    "control-plane-protocol": at(("controlPlane", 0, "protocol"), "http"),
    "port-zero": at(("ingress", 0, "ports", 0, "ports"), [0]),
    "port-too-high": at(("ingress", 0, "ports", 0, "ports"), [65536]),
    "port-as-string": at(("ingress", 0, "ports", 0, "ports"), ["22"]),
    "port-as-boolean": at(("ingress", 0, "ports", 0, "ports"), [True]),
    "port-range-one-item": at(("ingress", 0, "ports", 0, "ports"), [[22]]),
    "port-range-three-items": at(("ingress", 0, "ports", 0, "ports"), [[22, 23, 24]]),
    "port-range-as-text": at(("ingress", 0, "ports", 0, "ports"), ["8000-8100"]),
    "control-plane-port-zero": at(("controlPlane", 0, "port"), 0),
    "icmp-with-ports": at(("ingress", 2, "ports", 1, "ports"), [8]),
    "any-with-ports": at(("egress", 0, "ports", 1, "ports"), [[1, 2]]),
    "address-without-prefix": at(("workload", "addresses"), ["10.0.0.5"]),
    "no-addresses": at(("workload", "addresses"), []),
    "empty-workload-name": at(("workload", "name"), ""),
    "address-octet-too-big": at(("workload", "addresses"), ["10.0.0.256/32"]),
    "v4-prefix-too-long": at(("addressSets", "vips", "networks"), ["10.0.0.0/33"]),
    "v6-prefix-too-long": at(("addressSets", "vips", "networks"), ["2001:db8::/129"]),
    "v6-two-double-colons": at(("addressSets", "vips", "networks"), ["2001::db8::/64"]),
    "hostname-as-cidr": at(("controlPlane", 0, "cidr"), "cp.example.com/32"),
    "tier-upper-case": at(("tiers",), ["Security", "application"]),
    "tier-repeated": at(("tiers",), ["security", "security", "application"]),
    "tier-named-default": at(("tiers",), ["default", "security", "application"]),
    "tier-too-long": at(("ingress", 0, "tier"), "a" * 33),
    "ref-without-tier": at(("ingress", 0, "ref"), "ssh-admins"),
    "ref-upper-case-rule": at(("ingress", 0, "ref"), "security/SSH"),
    "peer-sets-a-string": at(("ingress", 0, "peerSets"), "admins"),
    "peer-set-empty-name": at(("ingress", 0, "peerSets"), [""]),
    "not-before-as-text": at(("ingress", 2, "notBefore"), "2026-01-01T00:00:00Z"),
    "not-after-null": at(("ingress", 2, "notAfter"), None),
    "process-null": at(("ingress", 2, "process"), None),
    "hash-wrong-algorithm": at(("hash",), "md5:" + "0" * 32),
    "hash-upper-case-hex": at(("hash",), "sha256:" + "A" * 64),
    "hash-short": at(("hash",), "sha256:" + "0" * 63),
    "policy-version-number": at(("policyVersion",), 7),
    "address-sets-a-list": at(("addressSets",), []),
}


@pytest.mark.parametrize("damage", INVALID.values(), ids=INVALID.keys())
def test_schema_rejects(damage: Callable[[Any], None]) -> None:
    data = copy.deepcopy(sample().to_dict())
    damage(data)
    assert errors(data) != []


VALID_CIDRS = [
    "0.0.0.0/0",
    "10.0.0.1/32",
    "255.255.255.255/32",
    "192.168.0.0/16",
    "::/0",
    "::1/128",
    "2001:db8::/32",
    "fe80::1:2:3:4/128",
    "1:2:3:4:5:6:7:8/128",
    "1::8/128",
    "1:2:3:4:5:6:7::/128",
    "::2:3:4:5:6:7:8/128",
    "2001:DB8::/32",
    "::ffff:10.0.0.1/128",
    "64:ff9b::1.2.3.4/128",
    "::1.2.3.4/128",
]
INVALID_CIDRS = [
    "10.0.0.1",
    "10.0.0/24",
    "10.0.0.01/32",
    "1.2.3.4.5/32",
    "10.0.0.0/-1",
    "10.0.0.0/ 8",
    "2001:db8::",
    "2001:db8:::/48",
    "1:2:3:4:5:6:7:8:9/128",
    "12345::/16",
    "g::/16",
    "::/130",
    "::ffff:10.0.0.256/128",
    "",
    "/0",
]


@pytest.mark.parametrize("text", VALID_CIDRS, ids=VALID_CIDRS)
def test_cidr_pattern_accepts(text: str) -> None:
    assert list(defined("cidr").iter_errors(text)) == []


@pytest.mark.parametrize("text", INVALID_CIDRS, ids=INVALID_CIDRS)
def test_cidr_pattern_rejects(text: str) -> None:
    assert list(defined("cidr").iter_errors(text)) != []


@given(gen.any_networks())
def test_cidr_pattern_accepts_every_network_python_writes(net: addresses.Network) -> None:
    validator = defined("cidrV4" if net.version == 4 else "cidrV6")
    assert list(validator.iter_errors(str(net))) == []
    assert list(validator.iter_errors(net.exploded)) == []


def example_from_docs() -> dict[str, Any]:
    text = (ROOT / "docs" / "ruleset.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/ruleset.md has exactly one JSON example"
    data: dict[str, Any] = json.loads(blocks[0])
    return data


def test_the_documented_example_is_valid_and_its_hash_is_right() -> None:
    data = example_from_docs()
    assert errors(data) == []
    doc = ruleset.RulesetDocument.from_dict(data)
    assert doc.to_dict() == data
