"""Where each API object of a policy tree was written: `Kind/name` (+ a field) -> `file:line`.

Fed by the files a command sent (`apply -f`); used by the CLI to put file and line beside the
objects a server's 422 names. The keys are the server's: `Workload/web-1`, `Service/mysql`,
`Settings/settings`, and `Rule/tier/name` for each rule of a Policy document (the server stores
rules one by one).

What it deliberately does not do: load or check anything (the loader did, before sending). A field
is followed only as far as its first list index, because what was sent is the canonical form (peers
and services in canonical order), and an index there may be another item in the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.policyfile import loader, nodes

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Origin:
    """One object in a file: the document, the path of the object in it, and how a field of the
    API object maps onto the file (a rule's fields are under its item of `spec.rules`)."""

    doc: nodes.Document
    base: nodes.Path
    rule: bool = False

    def line(self, field: str) -> int:
        """The line of `field` (an API field path such as `spec.from[0]`), or of the nearest
        thing above it that the file has."""
        path = _path(field)
        if self.rule:
            path = _rule_path(path)
        return self.doc.line((*self.base, *path))


class Origins:
    """`Kind/name` -> where it was written, for every named object of some files."""

    def __init__(self, found: dict[str, Origin]) -> None:
        self.found = found

    @classmethod
    def read(cls, paths: Sequence[str | Path]) -> Origins:
        """The objects of the files and directories named (unreadable ones are left out)."""
        docs, _ = loader.read(paths)
        found: dict[str, Origin] = {}
        for doc in docs:
            for base, data in _objects(doc.data, ()):
                _add(found, doc, base, data)
        return cls(found)

    def where(self, obj: str, field: str = "") -> str | None:
        """`file:line` of an object's field (of its name when the field is not in the file)."""
        origin = self.found.get(obj)
        if origin is None:
            return None
        return f"{origin.doc.file}:{origin.line(field or 'metadata.name')}"


def _objects(data: Any, base: nodes.Path) -> list[tuple[nodes.Path, dict[str, Any]]]:
    """The documents of a file's document: itself, or the items of a `kind: List`."""
    if not isinstance(data, dict):
        return []
    if data.get("kind") != "List":
        return [(base, data)]
    items = data.get("items")
    if not isinstance(items, list):
        return []
    return [found for i, item in enumerate(items) for found in _objects(item, (*base, "items", i))]


def _add(found: dict[str, Origin], doc: nodes.Document, base: nodes.Path, data: dict[str, Any]) -> None:
    kind, meta, spec = data.get("kind"), data.get("metadata"), data.get("spec")
    name = meta.get("name") if isinstance(meta, dict) else None
    if kind == "Settings":
        found.setdefault("Settings/settings", Origin(doc, base))
    elif kind == "Policy" and isinstance(spec, dict):
        rules = spec.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict) and isinstance(rule.get("name"), str):
                key = f"Rule/{spec.get('tier')}/{rule['name']}"
                found.setdefault(key, Origin(doc, (*base, "spec", "rules", i), rule=True))
    elif isinstance(kind, str) and isinstance(name, str):
        found.setdefault(f"{kind}/{name}", Origin(doc, base))


def _path(field: str) -> nodes.Path:
    """`spec.from[0].cidr` -> ("spec", "from"): up to the first list index (see the docstring)."""
    out: list[str | int] = []
    for match in _PART.finditer(field):
        if match[2] is not None:
            break
        out.append(match[1])
    return tuple(out)


def _rule_path(path: nodes.Path) -> nodes.Path:
    """An API Rule's field inside the Policy item it came from: `metadata.name` is `name`,
    `spec.x` is `x`."""
    if path[:1] == ("metadata",):
        return ("name",)
    return path[1:] if path[:1] == ("spec",) else path
