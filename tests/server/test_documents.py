"""The feed's fast encoding says exactly what `RulesetDocument.to_dict()` says, and the hash built
from shared fragments is the hash of the documented canonical JSON."""

from __future__ import annotations

import hashlib
import json

import pytest

from microseg.cli import loading
from microseg.engine import engine
from microseg.model import ruleset
from microseg.policyfile import synthetic
from microseg.server import documents


@pytest.mark.parametrize("source", ["example", "synthetic"])
def test_encoded_documents_equal_their_dict_form_and_hash(source: str) -> None:
    est = loading.load(None, example=True) if source == "example" else synthetic.generate(300, 40, 80, seed=3)
    docs = engine.PolicyEngine(est).documents()
    encoder = documents.DocumentEncoder()
    assert docs
    for doc in docs.values():
        encoded = encoder.encode(doc)
        assert json.loads(encoded) == doc.to_dict()
        assert encoder.encode(doc) is encoded
        body = {k: v for k, v in doc.to_dict().items() if k != "hash"}
        for name, members in body["addressSets"].items():
            digest = hashlib.sha256(
                json.dumps(members["networks"], separators=(",", ":")).encode()
            ).hexdigest()
            body["addressSets"][name] = {"description": members["description"], "sha256": "sha256:" + digest}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert doc.hash == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        assert ruleset.RulesetDocument.from_json(encoded.decode()).hash == doc.hash
