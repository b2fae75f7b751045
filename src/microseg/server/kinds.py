"""The object kinds of the API: which are policy (edited in the draft, provisioned as versions)
and which are live inventory (in effect at once), and the URL path of each.

Policy kinds are the policy-file kinds, except that rules are objects of their own (`Rule`, named
`tier/name`, with `spec.tier` and an optional `spec.policy` grouping) and `Exception` is a
time-limited allow with an owner and a reason. Live kinds are Workload, LabelRule and ModeScope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from microseg.errors import ValidationError

API_VERSION = "microseg.io/v1"
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Kind:
    """One kind of object."""

    name: str
    path: str
    draft: bool
    """True: edited in the draft and provisioned; False: live inventory."""
    singleton: str | None = None
    """The only allowed name, for kinds with one object (Settings)."""


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("Tier", "tiers", True),
        Kind("IPList", "iplists", True),
        Kind("Service", "services", True),
        Kind("Rule", "rules", True),
        Kind("Exception", "exceptions", True),
        Kind("Invariant", "invariants", True),
        Kind("Settings", "settings", True, singleton="settings"),
        Kind("Workload", "workloads", False),
        Kind("LabelRule", "labelrules", False),
        Kind("ModeScope", "modescopes", False),
    )
}
DRAFT = tuple(k for k, v in KINDS.items() if v.draft)
LIVE = tuple(k for k, v in KINDS.items() if not v.draft)


def object_name(doc: dict[str, Any]) -> str:
    """The key an object is stored under: metadata.name, or `tier/name` for rules."""
    name = str(doc["metadata"]["name"])
    if doc["kind"] == "Rule":
        tier = doc.get("spec", {}).get("tier")
        if not isinstance(tier, str) or not tier:
            raise ValidationError("a Rule needs spec.tier (text)", "spec.tier")
        return f"{tier}/{name}"
    return name


def check_header(doc: dict[str, Any]) -> Kind:
    """The kind of a document whose apiVersion, kind and name are acceptable."""
    if doc.get("apiVersion") != API_VERSION:
        raise ValidationError(f"apiVersion must be {API_VERSION}", "apiVersion")
    kind = KINDS.get(str(doc.get("kind")))
    if kind is None:
        raise ValidationError(f"unknown kind {doc.get('kind')!r} (known: {', '.join(KINDS)})", "kind")
    name = doc.get("metadata", {}).get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(
            "metadata.name: 1-253 letters, digits, '_', '.', ':', '-', starting and ending with a letter "
            "or digit",
            "metadata.name",
        )
    if kind.singleton and name != kind.singleton:
        raise ValidationError(
            f"there is one {kind.name} object and it is called {kind.singleton!r}", "metadata.name"
        )
    return kind
