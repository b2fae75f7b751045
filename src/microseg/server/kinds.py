"""The object kinds of the API: which are policy (edited in the draft, provisioned as versions)
and which are live inventory (in effect at once), and the URL path of each.

Policy kinds are the policy-file kinds, except that rules are objects of their own (`Rule`, named
`tier/name`, with `spec.tier` and an optional `spec.policy` grouping) and `Exception` is a
time-limited allow with an owner and a reason. Live kinds are Workload, LabelRule and ModeScope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microseg.errors import ValidationError
from microseg.model import names

API_VERSION = "microseg.io/v1"
NAME = names.OBJECT_NAME
"""The one name grammar, as policy files check it (`model.names`)."""


class ObjectError(ValidationError):
    """A document that is wrong before it is read as policy (its name, its kind), naming the object
    as every 422 does (`Kind/name`), so that a client can point at the file it came from."""

    def __init__(self, kind: str, name: Any, message: str, field: str) -> None:
        super().__init__(f"{kind} {name!r}: {message}" if name else f"{kind}: {message}", field)
        self.object = f"{kind}/{name}" if isinstance(name, str) and name else kind
        self.problem = message


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
            raise ObjectError("Rule", name, "a Rule needs spec.tier (text)", "spec.tier")
        return f"{tier}/{name}"
    return name


def check_header(doc: dict[str, Any]) -> Kind:
    """The kind of a document whose apiVersion, kind and name are acceptable."""
    if doc.get("apiVersion") != API_VERSION:
        raise ValidationError(f"apiVersion must be {API_VERSION}", "apiVersion")
    kind = KINDS.get(str(doc.get("kind")))
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if kind is None:
        message = f"unknown kind (known: {', '.join(KINDS)})"
        raise ObjectError(str(doc.get("kind")), name if isinstance(name, str) else "", message, "kind")
    if not isinstance(name, str):
        raise ObjectError(kind.name, "", "metadata.name must be text", "metadata.name")
    try:
        names.check(name)
    except ValidationError as exc:
        raise ObjectError(kind.name, name, exc.message, "metadata.name") from None
    if kind.singleton and name != kind.singleton:
        message = f"there is one {kind.name} object and it is called {kind.singleton!r}"
        raise ObjectError(kind.name, name, message, "metadata.name")
    return kind
