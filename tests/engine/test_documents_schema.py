"""Every document the engine compiles obeys the published JSON Schema and round-trips with its hash."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
from hypothesis import given, settings

from microseg.cli import loading
from microseg.engine import engine
from microseg.model import estate, ruleset
from tests.engine.estates import estates

SCHEMA = json.loads((resources.files("microseg") / "schemas" / "ruleset-v1.json").read_text())


def check(doc: ruleset.RulesetDocument) -> None:
    data = doc.to_dict()
    jsonschema.validate(data, SCHEMA)
    again = ruleset.RulesetDocument.from_json(json.dumps(data))
    assert again.hash == doc.hash and again.to_dict() == data


def test_example_documents_follow_the_schema() -> None:
    docs = loading.build(None, example=True).documents()
    assert len(docs) >= 10
    for doc in docs.values():
        check(doc)


@settings(max_examples=40, deadline=None)
@given(estates())
def test_random_documents_follow_the_schema(est: estate.Estate) -> None:
    for doc in engine.PolicyEngine(est).documents().values():
        check(doc)
