"""Typed access to one document's fields that collects problems instead of raising.

Used by `microseg.policyfile.build`: every accessor checks a value's type at a field path and, when
it is wrong, records a Problem (file, line, field path, a message a person understands) and returns
None, so that one pass reports every problem of every file at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from microseg import errors
from microseg.policyfile import nodes

T = TypeVar("T")


class Reader:
    """Reads one document; problems go to a shared list."""

    def __init__(self, doc: nodes.Document, problems: list[errors.Problem]) -> None:
        self.doc = doc
        self.problems = problems

    def error(self, path: nodes.Path, message: str) -> None:
        """Record a problem at `path`."""
        self.problems.append(
            errors.Problem(self.doc.file, self.doc.line(path), nodes.path_text(path), message)
        )

    def where(self, path: nodes.Path) -> str:
        """`file:line` of a path, for messages that point at a first definition."""
        return f"{self.doc.file}:{self.doc.line(path)}"

    def guard(self, path: nodes.Path, build: Callable[[], T]) -> T | None:
        """Run a model constructor; a ValidationError becomes a problem at `path` (+ its field)."""
        try:
            return build()
        except errors.ValidationError as exc:
            field = next((k for k in _FIELD_ALIASES.get(exc.field, (exc.field,)) if k), "")
            self.error((*path, field) if field else path, exc.message)
            return None

    def mapping(
        self, value: Any, path: nodes.Path, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """A mapping with only `allowed` keys and every `required` one."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping with {', '.join(allowed)}, got {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
                self.error((*path, key), f"unknown field '{key}'{hint}")
        for key in required:
            if key not in value:
                self.error(path, f"missing required field '{key}'")
        return value

    def string(self, value: Any, path: nodes.Path) -> str | None:
        """A non-empty string."""
        if not isinstance(value, str) or not value:
            self.error(path, f"expected a non-empty string, got {_kind(value)}")
            return None
        return value

    def integer(self, value: Any, path: nodes.Path) -> int | None:
        """An integer (not a boolean)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer, got {_kind(value)}")
            return None
        return value

    def boolean(self, value: Any, path: nodes.Path) -> bool | None:
        """true or false."""
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_kind(value)}")
            return None
        return value

    def items(self, value: Any, path: nodes.Path) -> list[tuple[nodes.Path, Any]]:
        """The elements of a list, with their paths (a problem and nothing for a non-list)."""
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {_kind(value)}")
            return []
        return [((*path, i), v) for i, v in enumerate(value)]

    def strings(self, value: Any, path: nodes.Path) -> list[str] | None:
        """A list of strings (numbers are accepted and turned into text, e.g. ports in CIDRs)."""
        out = [
            self.string(str(v) if isinstance(v, int | float) else v, p) for p, v in self.items(value, path)
        ]
        return None if any(v is None for v in out) or not isinstance(value, list) else [v for v in out if v]

    def str_map(self, value: Any, path: nodes.Path) -> dict[str, str] | None:
        """A mapping of strings to strings (scalars are turned into text: `port: 80` in attributes)."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_kind(value)}")
            return None
        out = {}
        for key, v in value.items():
            if isinstance(v, dict | list) or v is None:
                self.error((*path, key), f"expected a string value, got {_kind(v)}")
                continue
            out[key] = "true" if v is True else "false" if v is False else str(v)
        return out

    def moment(self, value: Any, path: nodes.Path) -> datetime | None:
        """An ISO 8601 time with a time zone."""
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                self.error(path, f"expected a time such as 2026-12-31T00:00:00Z, got {value!r}")
                return None
        if moment.tzinfo is None:
            self.error(path, "the time needs a time zone (end it with Z for UTC)")
            return None
        return moment.astimezone(UTC)


_FIELD_ALIASES = {"from": ("from",), "to": ("to",)}


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
