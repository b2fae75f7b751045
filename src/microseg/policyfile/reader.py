"""Typed access to one document's fields that collects problems instead of raising.

Used by the builders (`kinds`, `policies`): every accessor checks a value at a field path and, when
it is wrong, records a Problem (file, line, field path, a message a person understands) and returns
None, so that one pass reports every problem of every file at once. Model constructors run under
`guard`, which turns their ValidationError into a problem at the field it names.

What it deliberately does not do: know any kind. Builders say which fields a mapping may hold.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from microseg import errors
from microseg.model import labels
from microseg.policyfile import nodes

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


class Reader:
    """Reads one document, or one item of a `kind: List` (paths then start at `prefix`, e.g.
    ("items", 3)); problems go to a shared list."""

    def __init__(self, doc: nodes.Document, problems: list[errors.Problem], prefix: nodes.Path = ()) -> None:
        self.doc = doc
        self.problems = problems
        self.prefix = prefix

    def error(self, path: nodes.Path, message: str) -> None:
        """Record a problem at `path`."""
        full = (*self.prefix, *path)
        problem = errors.Problem(self.doc.file, self.doc.line(full), nodes.path_text(full), message)
        self.problems.append(problem)

    def where(self, path: nodes.Path) -> str:
        """`file:line` of a path, for messages that point at a first definition."""
        return f"{self.doc.file}:{self.doc.line((*self.prefix, *path))}"

    def item(self, path: nodes.Path) -> Reader:
        """A reader for the item at `path` of this one (a List's item)."""
        return Reader(self.doc, self.problems, (*self.prefix, *path))

    def guard(
        self, path: nodes.Path, build: Callable[[], T], fields: Mapping[str, nodes.Path] | None = None
    ) -> T | None:
        """Run a model constructor; a ValidationError becomes a problem at `path` plus the field it
        names (`fields` translates the model's field names into document paths)."""
        try:
            return build()
        except errors.ValidationError as exc:
            where = (fields or {}).get(exc.field, (exc.field,) if exc.field else ())
            self.error((*path, *where), exc.message)
            return None

    def mapping(
        self, value: Any, path: nodes.Path, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any] | None:
        """A mapping with only `allowed` keys (unknown ones are reported) and every `required` one."""
        allowed = tuple(allowed)
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping with {', '.join(allowed)}, got {describe(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.error((*path, key), f"unknown field '{key}'{suggest(key, allowed, 'allowed')}")
        for key in required:
            if key not in value:
                self.error(path, f"missing required field '{key}'")
        return value

    def text(self, value: Any, path: nodes.Path) -> str | None:
        """Non-empty text; any scalar counts, as written (`1.10` stays "1.10", `yes` stays "yes")."""
        if isinstance(value, str) and value:
            return value
        if value is not None and not isinstance(value, str | dict | list):
            return self.doc.texts.get((*self.prefix, *path), str(value))
        self.error(path, f"expected non-empty text, got {describe(value)}")
        return None

    def optional_text(self, m: Mapping[str, Any], key: str, path: nodes.Path) -> str | None:
        """`m[key]` as text when present; None (and no problem) when absent."""
        return self.text(m[key], (*path, key)) if key in m else None

    def integer(self, value: Any, path: nodes.Path) -> int | None:
        """An integer (not a boolean, not text)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer, got {describe(value)}")
            return None
        return value

    def boolean(self, value: Any, path: nodes.Path) -> bool | None:
        """true or false."""
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {describe(value)}")
            return None
        return value

    def items(self, value: Any, path: nodes.Path) -> list[tuple[nodes.Path, Any]]:
        """The elements of a list, with their paths (a problem and nothing for a non-list)."""
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {describe(value)}")
            return []
        return [((*path, i), v) for i, v in enumerate(value)]

    def texts(self, value: Any, path: nodes.Path) -> list[str] | None:
        """A list of texts; None when it is not a list or any element is wrong."""
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {describe(value)}")
            return None
        out = [self.text(v, p) for p, v in self.items(value, path)]
        return None if None in out else [v for v in out if v is not None]

    def str_map(self, value: Any, path: nodes.Path) -> dict[str, str] | None:
        """A mapping of text to text (scalar values as written: `port: 80` -> "80")."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {describe(value)}")
            return None
        out: dict[str, str] = {}
        for key, v in value.items():
            if v == "" or v is None:
                out[key] = ""  # an empty label value is valid; `key:` with nothing means the same
                continue
            found = self.text(v, (*path, key))
            if found is None:
                return None
            out[key] = found
        return out

    def labels(self, value: Any, path: nodes.Path) -> labels.Labels | None:
        """A label mapping; a bad key or value is reported at its own path."""
        raw = self.str_map(value, path)
        if raw is None:
            return None
        ok = True
        for key, v in raw.items():
            try:
                labels.check_key(key)
                labels.check_value(key, v)
            except errors.ValidationError as exc:
                self.error((*path, key), exc.message)
                ok = False
        return labels.Labels(raw) if ok else None

    def moment(self, value: Any, path: nodes.Path) -> datetime | None:
        """An ISO 8601 time with a time zone, in UTC."""
        moment: datetime | None = value if isinstance(value, datetime) else None
        if moment is None and isinstance(value, str | date):
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                moment = None
        if moment is None:
            self.error(path, f"expected a time such as 2026-12-31T00:00:00Z, got {describe(value)}")
            return None
        if moment.tzinfo is None:
            self.error(path, "the time needs a time zone (end it with Z for UTC)")
            return None
        return moment.astimezone(UTC)

    def choice(self, enum: type[E], value: Any, path: nodes.Path, *, any_case: bool = False) -> E | None:
        """One of an enum's values, spelled as the enum spells it (in any case with `any_case`:
        `TCP` is tcp, as Kubernetes and most firewalls write it)."""
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return enum(text.lower() if any_case else text)
        except ValueError:
            names = [e.value for e in enum]
            close = difflib.get_close_matches(text.lower() if any_case else text, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.error(path, f"'{text}' is not one of {', '.join(names)}{hint}")
            return None


def suggest(name: str, known: Iterable[str], label: str = "known") -> str:
    """` (did you mean 'x'? known: a, b, ...)`, or ` (none defined)` when nothing is known."""
    names = sorted(known)
    if not names:
        return " (none defined)"
    close = difflib.get_close_matches(name, names, n=1)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f" (did you mean '{close[0]}'? {label}: {shown})" if close else f" ({label}: {shown})"


def describe(value: Any) -> str:
    """How a wrong value reads in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"
