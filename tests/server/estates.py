"""Estates the API tests load: the example estate as policy-file documents, and small objects."""

from __future__ import annotations

from typing import Any

from microseg.cli import loading
from microseg.policyfile import dumper
from tests.server.conftest import Api, ok

API = "microseg.io/v1"


def example() -> list[dict[str, Any]]:
    """The example estate shipped with microseg, as the documents `microseg apply -f` sends."""
    return dumper.documents(loading.load(None, example=True))


def provision_example(api: Api) -> None:
    """The example estate applied and provisioned as v1, as most API tests start."""
    ok(api.post("/apply", {"documents": example()}))
    ok(api.post("/versions", {"note": "v1"}), 201)


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """One object."""
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def workload(name: str, address: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A VM workload."""
    return doc("Workload", name, {"kind": "vm", "addresses": [address], **spec}, labels)


def rule(tier: str, name: str, priority: int, src: str, dst: str, services: Any, action: str = "allow",
         **more: Any) -> dict[str, Any]:  # fmt: skip
    """A Rule object between two selectors."""
    spec = {"tier": tier, "priority": priority, "action": action, "from": [{"selector": src}],
            "to": [{"selector": dst}], "services": services, **more}  # fmt: skip
    return doc("Rule", name, spec)
