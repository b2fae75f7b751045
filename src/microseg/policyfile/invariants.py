"""kind: Invariant -> a reachability statement, once every service and IP list is known.

Built like a rule's sides (the same peer and service syntax, the same problems at the same field
paths); what an invariant means is `microseg.model.invariants`' and the engine's business.
"""

from __future__ import annotations

from typing import Any

from microseg.model import invariants as model
from microseg.policyfile import kinds, policies
from microseg.policyfile.reader import Reader

FIELDS = ("type", "from", "to", "services", "description")
REQUIRED = ("type", "from")


def invariant(
    r: Reader, doc: dict[str, Any], known: policies.Known
) -> tuple[str | None, model.Invariant | None]:
    """One Invariant document; `to` and `services` default to `any`."""
    name, _ = kinds.metadata(r, doc)
    m = kinds.spec(r, doc, FIELDS, REQUIRED)
    if m is None:
        return name, None
    shape = r.choice(model.Shape, m["type"], ("spec", "type")) if "type" in m else None
    sources = policies.peers(r, m["from"], ("spec", "from"), known) if "from" in m else None
    destinations = policies.peers(r, m.get("to", "any"), ("spec", "to"), known)
    svcs = policies.service_refs(r, m.get("services", "any"), ("spec", "services"), known)
    desc = r.optional_text(m, "description", ("spec",)) or ""
    if name is None or shape is None or sources is None or destinations is None or svcs is None:
        return name, None
    return name, r.guard(("spec",), lambda: model.Invariant(name, shape, sources, destinations, svcs, desc))
