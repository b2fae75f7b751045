"""A template's parameters: what each one is, and `--set` text -> checked, typed values.

Fed by `catalog` with the parameter declarations of a template file and the `--set key=value` pairs
a person gave; feeds `expand` with a scope of typed values (str, int, or a list of items). Every
value is checked here, before anything is substituted: label values by the model's own
`labels.check_value` (and lowercase, because they become part of rule names), ports and
priorities as numbers in range, CIDRs by `addresses.network` (or an IP list's name, by the one name
grammar). All problems are reported at once.

What it deliberately does not do: know where a value goes (that is the template's data), or check
the documents that come out (the real policy-file loader does, in `catalog`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from microseg import errors
from microseg.model import addresses, labels, names

# Rule, policy and service names are made of parameter values, and rule names allow lowercase only.
_NAME_PART = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
MAX_ITEMS = 90
"""A list parameter makes one rule per item at `priority + 10 + index`: 90 keeps an instance inside
its 100 priorities."""
MAX_PRIORITY = 1_000_000

Item = dict[str, Any]
Value = str | int | Item | list[Item]
Scope = dict[str, Any]


class Kind(StrEnum):
    """What a parameter holds."""

    LABEL = "label"
    """A label value (lowercase: it also becomes part of names), e.g. app=crm."""
    PORT = "port"
    """A TCP/UDP port, 1-65535."""
    PRIORITY = "priority"
    """The first rule priority of the instance; its rules use priority .. priority+99."""
    CIDR = "cidr"
    """Who is on one side: an IP address or network, or the name of an IP list (which must exist
    where the result is used); the value is the peer, `{cidr: ...}` or `{ipList: ...}`."""
    SERVICES = "services"
    """A comma-separated list of `name[:port]` (name: a label value; port: else the `portFrom` one)."""


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of a template."""

    name: str
    kind: Kind
    description: str
    default: str | None = None
    """The value when `--set` does not give one (None: the parameter is required)."""
    example: str | None = None
    """What `template show` uses for a required parameter."""
    port_from: str | None = None
    """For `services`: the port parameter that items without `:port` take."""

    @property
    def required(self) -> bool:
        """Whether `--set` must give it."""
        return self.default is None

    def parse(self, text: str, ports: Mapping[str, Any]) -> Value:
        """The typed value of `text`, or ValidationError saying what is wrong with it."""
        if self.kind is Kind.LABEL:
            return label_part(self.name, text)
        if self.kind is Kind.PORT:
            return number(self.name, text, 1, 65535)
        if self.kind is Kind.PRIORITY:
            return number(self.name, text, 0, MAX_PRIORITY)
        if self.kind is Kind.CIDR:
            return address_peer(self.name, text)
        fallback = ports.get(self.port_from) if self.port_from else None
        return service_items(self.name, text, fallback)


def label_part(name: str, text: str) -> str:
    """A label value that may also stand in a rule name."""
    if not text:
        raise errors.ValidationError(f"{name}: needs a value", name)
    labels.check_value(name, text)
    if not _NAME_PART.fullmatch(text):
        raise errors.ValidationError(
            f"{name}={text!r}: must be lowercase letters, digits, '-', '_', '.' "
            "(it becomes part of rule names)",
            name,
        )
    return text


_ADDRESS_LIKE = re.compile(r"^[0-9A-Fa-f.:/]+$")
"""Text only an address is made of: such text is read as a CIDR (`10.0.0`: a wrong one), never
as an IP list name."""


def address_peer(name: str, text: str) -> Item:
    """`{cidr: 10.77.200.0/24}` for an address or network, `{ipList: office}` for a name."""
    if _ADDRESS_LIKE.fullmatch(text):
        return {"cidr": str(addresses.network(text))}
    try:
        names.check(text, "IP list name")
    except errors.ValidationError as exc:
        raise errors.ValidationError(f"{name}: not a CIDR, and {exc.message}", name) from None
    return {"ipList": text}


def ip_lists(scope: Scope) -> list[str]:
    """The IP list names that parameters of a scope refer to (in parameter order)."""
    return [v["ipList"] for v in scope.values() if isinstance(v, dict) and "ipList" in v]


def number(name: str, text: str, low: int, high: int) -> int:
    """An integer in [low, high]."""
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise errors.ValidationError(f"{name}={text!r}: expected a number", name)
    found = int(text)
    if not low <= found <= high:
        raise errors.ValidationError(f"{name}={found}: must lie within {low}-{high}", name)
    return found


def service_items(name: str, text: str, fallback: int | None) -> list[Item]:
    """`orders:8080,payments` -> [{name, port, index}, ...]; names unique, ports checked."""
    items: list[Item] = []
    for index, part in enumerate(p.strip() for p in text.split(",")):
        svc, sep, port = part.partition(":")
        if not sep and fallback is None:
            raise errors.ValidationError(f"{name}: {part!r} needs a port (name:port)", name)
        item = {
            "name": label_part(f"{name}[{index}]", svc),
            "port": number(f"{name}[{index}]", port, 1, 65535) if sep else fallback,
            "index": index,
        }
        if any(i["name"] == item["name"] for i in items):
            raise errors.ValidationError(f"{name}: {svc!r} is listed twice", name)
        items.append(item)
    if not 1 <= len(items) <= MAX_ITEMS:
        raise errors.ValidationError(f"{name}: needs 1-{MAX_ITEMS} entries", name)
    return items


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """`--set key=value` options -> {key: value}; a key given twice is an error."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise errors.UserError(f"--set {pair!r}: expected key=value, e.g. --set app=crm")
        if key in found:
            raise errors.UserError(f"--set {key}: given twice ({found[key]!r} and {value!r})")
        found[key] = value.strip()
    return found


def _close(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve(template: str, declared: Sequence[Parameter], given: Mapping[str, str]) -> Scope:
    """Checked values of every parameter (given, else default); every problem at once."""
    known = {p.name: p for p in declared}
    problems = [f"unknown parameter {key!r}{_close(key, known)}" for key in given if key not in known]
    problems += [
        f"missing required parameter {p.name!r} ({p.description})"
        for p in declared
        if p.required and p.name not in given
    ]
    scope: Scope = {}
    # Lists last: their items take a port parameter's value when they give none.
    for p in sorted(declared, key=lambda p: p.kind is Kind.SERVICES):
        text = given.get(p.name, p.default)
        if text is None:
            continue
        try:
            scope[p.name] = p.parse(text, scope)
        except errors.ValidationError as exc:
            problems.append(str(exc))
    if problems:
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} with the parameters of template {template}"
        shown = ", ".join(p.name + ("" if p.default is None else f"={p.default}") for p in declared)
        raise errors.UserError("\n".join([head, *(f"  {p}" for p in problems), f"known parameters: {shown}"]))
    return scope
