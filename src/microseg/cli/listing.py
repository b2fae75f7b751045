"""What `microseg get` shows of each listed path as a table: its headers, a row for each item, and
the order of the rows.

Fed by `remote.get` with the items the server listed (the API's JSON, as it came) and, for rules,
by the server's tiers (the rows' order); feeds `remote.get` with the rows it prints as a table.
Policy documents without a listing of their own share one (`DOCUMENTS`: who changed each, when).

It does not talk to the server except to order rows, does not print (`remote.table` does), and
does not touch `-o json` / `-o yaml`: scripts get the items exactly as the server sent them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microseg.cli import client, output
from microseg.model import tiers

Item = dict[str, Any]
"""One listed item as the server sent it (`-o json` and `-o yaml` print it as it came)."""


@dataclass(frozen=True)
class Listing:
    """How `get` lists one path and shows it as a table: its headers and a row for each item."""

    headers: tuple[str, ...]
    row: Callable[[Item], list[str]]
    order: Callable[[client.Client], Callable[[Item], Any]] | None = None
    """The sort key of the table's rows, made from what else the server holds (None: as listed)."""
    paged: bool = True
    """Whether the path takes a selector and a page size (versions take neither: the newest 100)."""

    def query(self, selector: str | None) -> dict[str, Any]:
        """The query of the list request: the selector and the largest page, when the path takes them."""
        return {"selector": selector, "limit": 10_000} if self.paged else {}

    def rows(self, api: client.Client, items: list[Item]) -> list[list[str]]:
        """The table's rows, one per item, in this listing's order."""
        if self.order is not None:
            items = sorted(items, key=self.order(api))
        return [self.row(item) for item in items]


@dataclass(frozen=True)
class Listed:
    """A listed object as the CLI reads it: a generic policy document (any kind), with the status
    the server adds."""

    name: str
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def of(cls, item: Item) -> Listed:
        """Read one item of an object listing."""
        return cls(str(item["metadata"]["name"]), item.get("spec", {}), item.get("status", {}))

    def status_text(self, key: str) -> str:
        """A status field for a table (`-` when the server gives none)."""
        return str(self.status.get(key, "-"))


def rule_order(api: client.Client) -> Callable[[Item], tuple[int, str, int, str]]:
    """Rules in evaluation order: by their tier's order (the server's tiers, else the built-in
    orders), then priority, then name, as the engine evaluates them."""
    orders = {t.name: t.order for t in tiers.BUILTIN_TIERS}
    orders |= {t.name: int(t.spec.get("order", 0)) for t in map(Listed.of, api.get("/tiers")["items"])}

    def key(item: Item) -> tuple[int, str, int, str]:
        rule = Listed.of(item)
        tier, priority = str(rule.spec.get("tier")), rule.spec.get("priority")
        return (
            orders.get(tier, sys.maxsize),
            tier,
            priority if isinstance(priority, int) else sys.maxsize,
            rule.name,
        )

    return key


def _workload_row(item: Item) -> list[str]:
    w = Listed.of(item)
    addresses = ",".join(w.spec.get("addresses", []))
    labels = ",".join(f"{k}={v}" for k, v in sorted(w.status.get("effectiveLabels", {}).items()))
    return [w.name, addresses, labels, w.status_text("mode"), w.status_text("agent")]


def _rule_row(item: Item) -> list[str]:
    r = Listed.of(item)
    spec = r.spec
    return [
        f"{spec.get('tier')}/{r.name}",
        str(spec.get("priority")),
        str(spec.get("action")),
        _peers(spec.get("from")),
        _peers(spec.get("to")),
        service_text(spec.get("services")),
    ]


def _version_row(item: Item) -> list[str]:
    from microseg.server import responses  # here, not at the top: pydantic is no startup cost

    v = responses.Version.model_validate(item)
    again = f" (rollback of v{v.rollbackOf})" if v.rollbackOf else ""
    return [v.name + again, output.timestamp(v.createdAt), v.createdBy, v.note]


def _agent_row(item: Item) -> list[str]:
    from microseg.server import responses

    a = responses.Agent.model_validate(item)
    seen = output.timestamp(a.lastSeen)
    return [a.workload, a.state, "yes" if a.online else "no", a.dataplane or "-", seen]


def _document_row(item: Item) -> list[str]:
    o = Listed.of(item)
    return [o.name, output.timestamp(o.status["updatedAt"]), o.status["updatedBy"]]


LISTINGS: dict[str, Listing] = {
    "workloads": Listing(("NAME", "ADDRESSES", "LABELS", "MODE", "AGENT"), _workload_row),
    "rules": Listing(("RULE", "PRIORITY", "ACTION", "FROM", "TO", "SERVICES"), _rule_row, order=rule_order),
    "versions": Listing(("VERSION", "CREATED", "BY", "NOTE"), _version_row, paged=False),
    "agents": Listing(("WORKLOAD", "STATE", "ONLINE", "DATAPLANE", "LAST SEEN"), _agent_row),
}
"""What `get` shows of each path; paths not here are policy documents (`DOCUMENTS`)."""
DOCUMENTS = Listing(("NAME", "UPDATED", "BY"), _document_row)
"""A table of policy documents says only who changed each, when (`-o yaml` has the rest)."""


def of(path: str) -> Listing:
    """How `get` lists `path`: its own listing, else the policy documents' one."""
    return LISTINGS.get(path, DOCUMENTS)


def service_text(value: Any) -> str:
    """Services as people write them: `mysql`, `3306/tcp`, `8000-8080/tcp`, `icmp`, `any`."""
    if not isinstance(value, list):
        return str(value)
    return ", ".join(_one_service(s) for s in value)


def _one_service(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    protocol = str(item.get("protocol", "tcp")).lower()
    ports = "-".join(str(item[k]) for k in ("port", "endPort") if k in item)
    text = f"{ports}/{protocol}" if ports else protocol
    more = [f"{k} {v}" for k, v in item.items() if k not in ("port", "endPort", "protocol")]
    return " ".join([text, *more])


def _peers(value: Any) -> str:
    if not isinstance(value, list):
        return str(value)
    return " ".join(next(iter(p.values())) if isinstance(p, dict) and len(p) == 1 else str(p) for p in value)
