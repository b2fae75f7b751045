"""YAML text -> plain Python documents, remembering the line of every field.

First step of loading policy files: compose YAML nodes (safe loader, libyaml when present),
convert them to dicts, lists and scalars ourselves, and record `path -> line` for every node (a
mapping entry's line is its key's), so that later checks can point at `file:line field.path`. The
text of every plain scalar is kept too: `version: 1.10` is the label value "1.10", not 1.1.
Feeds `microseg.policyfile.reader` and `microseg.policyfile.loader`.

What it deliberately does not do: interpret kinds or values. It does report what plain YAML
loading would hide: duplicate keys, non-text keys, recursive aliases, alias bombs, nesting too
deep for the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from microseg import errors

Path = tuple[str | int, ...]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONSTRUCTOR = yaml.SafeLoader("")
_MERGE = "tag:yaml.org,2002:merge"
_MIN_BUDGET = 100_000
"""Nodes a document may always expand to; beyond, two per character of the text (a node without
aliases takes at least one character, so only alias expansion can reach the limit: billion laughs)."""
MAX_DEPTH = 64
"""Nesting a document may have (policy needs under 10); deeper would exhaust the converter's stack."""


@dataclass
class Document:
    """One YAML document of a file, with the line of each field path and the text of scalars."""

    file: str
    index: int
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    texts: dict[Path, str] = field(default_factory=dict)
    """The source text of scalars that YAML resolved to something other than a string."""

    def line(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, self.lines.get((), 0))


def path_text(path: Path) -> str:
    """`spec.rules[2].from[0]` for ("spec", "rules", 2, "from", 0)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(text: str, filename: str) -> tuple[list[Document], list[errors.Problem]]:
    """Every document in `text`; a YAML syntax error becomes a problem with its line."""
    docs: list[Document] = []
    problems: list[errors.Problem] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_LOADER)):
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document (`---` with nothing after it)
            doc = Document(filename, index, None)
            budget = max(_MIN_BUDGET, 2 * len(text))
            doc.data = _Converter(doc, problems, budget).convert(node, ())
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problems.append(errors.Problem(filename, line, "", f"YAML syntax error: {exc.problem or exc}"))
    except yaml.YAMLError as exc:
        problems.append(errors.Problem(filename, 0, "", f"YAML error: {exc}"))
    return docs, problems


class _Converter:
    """Nodes -> Python values for one document, recording lines, texts and problems."""

    def __init__(self, doc: Document, problems: list[errors.Problem], budget: int) -> None:
        self.doc = doc
        self.problems = problems
        self.active: set[int] = set()
        self.budget = budget

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        line = node.start_mark.line + 1
        self.problems.append(errors.Problem(self.doc.file, line, path_text(path), message))

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        self.budget -= 1
        if self.budget < 0:
            if self.budget == -1:
                self.problem(node, path, "the document expands to too many nodes (aliases?)")
            return None
        if len(path) > MAX_DEPTH:
            self.problem(node, path[:3], f"nested deeper than {MAX_DEPTH} levels")
            return None
        if id(node) in self.active:
            self.problem(node, path, "a recursive alias cannot be loaded")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)  # the composer makes only these three kinds
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        build = _CONSTRUCTOR.yaml_constructors.get(node.tag)
        if build is None:
            self.problem(node, path, f"unsupported YAML tag {node.tag}")
            return None
        value = build(_CONSTRUCTOR, node)
        if not isinstance(value, str):
            self.doc.texts[path] = node.value
        return value

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.fill(node, path, out, explicit=True)
        return out

    def fill(self, node: yaml.MappingNode, path: Path, out: dict[str, Any], *, explicit: bool) -> None:
        """Entries of `node` into `out`; `<<: *anchor` entries only where `out` has no such key."""
        first_line: dict[str, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be plain text")
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first_line:
                message = f"duplicate key '{key}' (first at line {first_line[key]})"
                self.problem(key_node, (*path, key), message)
                continue
            first_line[key] = line
            if explicit or key not in out:
                self.doc.lines[(*path, key)] = line
                out[key] = self.convert(value_node, (*path, key))
        for source in merged:
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, path, "`<<` merges mappings only")
                continue
            if id(source) in self.active:
                self.problem(source, path, "a recursive alias cannot be loaded")
                continue
            self.active.add(id(source))
            self.fill(source, path, out, explicit=False)
            self.active.discard(id(source))
