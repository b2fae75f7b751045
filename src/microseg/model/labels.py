"""Labels: free key=value pairs on workloads, with Kubernetes label syntax.

A key is `[prefix/]name`: the optional prefix a DNS subdomain (<= 253 chars), the name <= 63 chars of
alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric. A value is empty or follows the name
rule. Labels are kept as a sorted tuple of pairs so they hash, compare and print stably.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import TypeVar, overload

from microseg.errors import ValidationError

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_key(key: str) -> str:
    """Return `key` when it is a valid label key, else raise ValidationError saying why."""
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValidationError(f"label key {key!r}: prefix must be a DNS subdomain (e.g. example.com)")
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"label key {key!r}: name must be 1-63 characters of letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit"
        )
    return key


def check_value(key: str, value: str) -> str:
    """Return `value` when it is a valid label value for `key`, else raise ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(f"label {key!r}: value must be a string, got {type(value).__name__}")
    if value and not _NAME.fullmatch(value):
        raise ValidationError(
            f"label {key}={value!r}: value must be empty or 1-63 characters of letters, digits, "
            "'-', '_', '.', starting and ending with a letter or digit"
        )
    return value


class Labels(Mapping[str, str]):
    """An immutable, hashable, validated label set.

    Lookups go to a dict beside the sorted pairs, and the text is made once: selectors look keys
    up, and the analytics print label sets, once per flow (a million times in a window)."""

    __slots__ = ("_by_key", "_hash", "_items", "_text")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        checked = {check_key(k): check_value(k, v) for k, v in pairs}
        self._fill(tuple(sorted(checked.items())))

    def _fill(self, items: tuple[tuple[str, str], ...]) -> None:
        self._items = items
        self._by_key = dict(items)
        self._hash = hash(items)
        self._text: str | None = None

    @classmethod
    def _of(cls, items: tuple[tuple[str, str], ...]) -> Labels:
        """Labels of pairs taken from other Labels (valid and sorted already: not checked again,
        since a compile derives an identity from every workload's labels)."""
        made = cls.__new__(cls)
        made._fill(items)
        return made

    @classmethod
    def parse(cls, text: str) -> Labels:
        """Parse `k=v,k2=v2` (the CLI form)."""
        pairs: list[tuple[str, str]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValidationError(f"label {part!r}: expected key=value")
            pairs.append((key.strip(), value.strip()))
        return cls(pairs)

    def __getitem__(self, key: str) -> str:
        return self._by_key[key]

    @overload
    def get(self, key: str, /) -> str | None: ...

    @overload
    def get(self, key: str, default: str | T, /) -> str | T: ...

    def get(self, key: str, default: object = None, /) -> object:
        """The value of `key`, else `default` (without the KeyError `Mapping.get` goes through)."""
        return self._by_key.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        return NotImplemented

    def __lt__(self, other: Labels) -> bool:
        return self._items < other._items

    def __repr__(self) -> str:
        return f"Labels({self})"

    def __str__(self) -> str:
        if self._text is None:
            self._text = ",".join(f"{k}={v}" for k, v in self._items)
        return self._text

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The labels as a sorted tuple of (key, value)."""
        return self._items

    def merged(self, other: Mapping[str, str]) -> Labels:
        """A new label set: these labels, with `other`'s keys added or replaced."""
        return Labels({**dict(self._items), **dict(other)})

    def without(self, *keys: str) -> Labels:
        """A new label set without `keys`."""
        return Labels._of(tuple(p for p in self._items if p[0] not in keys))

    def only(self, keys: Container[str]) -> Labels:
        """A new label set of the labels whose key is in `keys`."""
        return Labels._of(tuple(p for p in self._items if p[0] in keys))
