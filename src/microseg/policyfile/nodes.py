"""YAML text -> plain Python documents, remembering the line of every field.

First step of loading policy files: compose YAML nodes (safe loader), convert them to dicts, lists
and scalars ourselves, and record `path -> line` for every node, so that later checks can point at
`file:line field.path`. Feeds `microseg.policyfile.build`.

What it deliberately does not do: interpret kinds or values (timestamps and numbers stay as the
YAML scalar resolver types them; a later step checks them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from microseg import errors

Path = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document of a file, with the line of each field path."""

    file: str
    index: int
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

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
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader)):
            if node is None:
                continue
            doc = Document(filename, index, None)
            doc.data = _convert(node, (), doc.lines)
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        return docs, [errors.Problem(filename, line, "", f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return docs, [errors.Problem(filename, 0, "", f"YAML error: {exc}")]
    return docs, []


_SCALARS = yaml.SafeLoader("")


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _SCALARS.construct_object(key_node, deep=True)
            key = key if isinstance(key, str) else str(key)
            out[key] = _convert(value_node, (*path, key), lines)
            lines.setdefault((*path, key), key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _SCALARS.construct_object(node, deep=True)
