"""Helpers for policy-file tests: the example estate's folder, and loading text that must fail."""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

import pytest

from microseg import errors, policyfile

HEAD = "apiVersion: microseg.io/v1\n"


def examples() -> Path:
    """The example estate shipped in the package."""
    return Path(str(resources.files("microseg") / "examples" / "estate"))


def problems(text: str, name: str = "p.yaml") -> list[errors.Problem]:
    """The problems loading `text` reports (it must fail)."""
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load_text(textwrap.dedent(text), name)
    return caught.value.problems


def doc(kind: str, body: str) -> str:
    """One document of `kind`; `body` is the YAML after `kind:` (dedented)."""
    return f"{HEAD}kind: {kind}\n{textwrap.dedent(body)}"
