"""Stored objects -> one Estate, through the policy-file loader (the one parser of policy).

Fed by the service (to validate a change before it is written) and the runtime (to compile what
agents get). Policy objects become loader documents: Rules are grouped into Policy documents by
(tier, policy), Exceptions become allow rules with an expiry in the `exception` tier (order 150:
after quarantine, before the security guard rails; disabled until approved, see
`server.exceptions`), and the loader checks everything at once. Its
problems are mapped back to the object and field they came from. Workloads are loaded one
document at a time and cached by ETag, because there are many and they change one by one.

What it deliberately does not do: write anything, or decide what is allowed (the engine does).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from microseg import errors, policyfile
from microseg.model import addresses, estate, labelrules, selectors, services, workloads
from microseg.server import kinds

EXCEPTION_TIER = "exception"
EXCEPTION_ORDER = 150
DEFAULT_POLICY = "rules"
_ITEM = re.compile(r"^items\[(\d+)\]\.?(.*)$")
_RULE = re.compile(r"^spec\.rules\[(\d+)\]\.?(.*)$")
_EXCEPTION_FIELDS = {"notAfter": "expires", "action": "", "priority": "", "name": "metadata.name"}


class InvalidError(errors.UserError):
    """The objects do not form a valid estate; nothing was changed."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}; nothing was changed"
        super().__init__(
            "\n".join([head, *(f"  {p['object']}: {p['field']}: {p['message']}" for p in problems)])
        )


Doc = dict[str, Any]
Origin = tuple[str, dict[int, str]]
"""What a loader item came from: `Kind/name`, and for a Policy item, rule index -> `Rule tier/name`."""


def _problem(origin: str, field: str, message: str) -> dict[str, str]:
    return {"object": origin, "field": field, "message": message}


def loader_items(docs: Iterable[Doc]) -> tuple[list[Doc], list[Origin], list[dict[str, str]]]:
    """Policy objects (and label rules) as loader documents, where each came from, and the
    problems found before loading (a Rule without a tier, an Exception without an owner)."""
    items: list[Doc] = []
    origins: list[Origin] = []
    problems: list[dict[str, str]] = []
    groups: dict[tuple[str, str], list[tuple[str, Doc]]] = defaultdict(list)
    excepted: list[tuple[str, Doc]] = []
    for doc in docs:
        origin = f"{doc['kind']}/{kinds.object_name(doc)}"
        spec = dict(doc.get("spec") or {})
        if doc["kind"] == "Rule":
            tier, policy = spec.pop("tier"), spec.pop("policy", DEFAULT_POLICY)
            groups[(tier, str(policy))].append((origin, {"name": doc["metadata"]["name"], **spec}))
        elif doc["kind"] == "Exception":
            rule = _exception_rule(origin, doc, len(excepted), problems)
            if rule is not None:
                excepted.append((origin, rule))
        elif doc["kind"] in ("Tier", "IPList", "Service", "Invariant", "Settings", "LabelRule"):
            items.append(doc)
            origins.append((origin, {}))
    if excepted:
        items.append(_doc("Tier", EXCEPTION_TIER, {"order": EXCEPTION_ORDER, "description": "Exceptions"}))
        origins.append(("Tier/" + EXCEPTION_TIER, {}))
        groups[(EXCEPTION_TIER, "exceptions")] = excepted
    policy_tiers: dict[str, set[str]] = defaultdict(set)
    for tier, policy in groups:
        policy_tiers[policy].add(tier)
    for (tier, policy), members in sorted(groups.items()):
        name = policy if len(policy_tiers[policy]) == 1 else f"{policy}@{tier}"
        items.append(_doc("Policy", name, {"tier": tier, "rules": [r for _, r in members]}))
        origins.append((f"Rule/{tier}/*", {i: o for i, (o, _) in enumerate(members)}))
    return items, origins, problems


def _doc(kind: str, name: str, spec: Doc) -> Doc:
    return {"apiVersion": kinds.API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _exception_rule(origin: str, doc: Doc, index: int, problems: list[dict[str, str]]) -> Doc | None:
    spec = doc.get("spec") or {}
    missing = [f for f in ("owner", "reason", "expires", "from", "to", "services") if f not in spec]
    known = {"owner", "reason", "expires", "ticket", "approver", "approvedAt", "from", "to", "services"}
    extra = sorted(set(spec) - known)
    for field in missing:
        problems.append(_problem(origin, f"spec.{field}", f"missing required field '{field}'"))
    for field in extra:
        problems.append(_problem(origin, f"spec.{field}", f"unknown field '{field}'"))
    if missing or extra:
        return None
    why = str(spec["reason"])
    if spec.get("ticket"):
        why += f" (ticket {spec['ticket']})"
    if spec.get("approver"):
        why += f" (approved by {spec['approver']})"
    else:
        why += " (awaiting approval)"
    return {
        "name": doc["metadata"]["name"],
        "priority": 1000 + index,
        "action": "allow",
        "from": spec["from"],
        "to": spec["to"],
        "services": spec["services"],
        "notAfter": spec["expires"],
        "owner": spec["owner"],
        "reason": f"exception: {why}",
        # a request is checked like any rule but matches nothing until another user approves it
        "enabled": bool(spec.get("approver")),
    }


def load_policy(docs: Iterable[Doc]) -> estate.Estate:
    """Policy objects and label rules -> an estate without workloads; InvalidError lists every problem."""
    items, origins, problems = loader_items(docs)
    if problems:
        raise InvalidError(problems)
    listed = {"apiVersion": kinds.API_VERSION, "kind": "List", "items": items}
    try:
        return policyfile.load_data(listed, "api")
    except errors.PolicyFileError as exc:
        raise InvalidError([_mapped(p, origins) for p in exc.problems]) from None


def _mapped(problem: errors.Problem, origins: list[Origin]) -> dict[str, str]:
    m = _ITEM.match(problem.field)
    if m is None:
        return _problem("(objects)", problem.field, problem.message)
    origin, rules = origins[int(m[1])]
    field = m[2]
    r = _RULE.match(field)
    if rules and r is not None and int(r[1]) in rules:
        origin, field = rules[int(r[1])], r[2]
        if origin.startswith("Exception/"):
            field = _EXCEPTION_FIELDS.get(field.split(".")[0], field) or field
        field = field if field.startswith("metadata") or not field else f"spec.{field}"
        field = "metadata.name" if field == "spec.name" else field
    return _problem(origin, field, problem.message)


class WorkloadCache:
    """Workload documents -> model Workloads, one document at a time, remembered by ETag."""

    def __init__(self) -> None:
        self._models: dict[str, workloads.Workload] = {}

    def model(self, doc: Doc, etag: str = "") -> workloads.Workload:
        """The workload a document describes; InvalidError when it is wrong."""
        cached = self._models.get(etag) if etag else None
        if cached is not None:
            return cached
        origin = f"Workload/{doc['metadata']['name']}"
        try:
            found = policyfile.load_data(doc, "api").workloads[0]
        except errors.PolicyFileError as exc:
            raise InvalidError([_problem(origin, p.field, p.message) for p in exc.problems]) from None
        if etag:
            if len(self._models) > 200_000:
                self._models.clear()
            self._models[etag] = found
        return found


@dataclass(frozen=True)
class ModeScope:
    """Workloads matching `selector` run in `mode` (the first scope by priority, then name, wins)."""

    name: str
    selector: selectors.LabelSelector
    mode: workloads.Mode
    priority: int


def mode_scope(doc: Doc) -> ModeScope:
    """A ModeScope document -> its model; InvalidError when it is wrong."""
    origin = f"ModeScope/{doc['metadata']['name']}"
    spec = doc.get("spec") or {}
    problems = [
        _problem(origin, f"spec.{k}", f"unknown field '{k}'")
        for k in spec
        if k not in ("selector", "mode", "priority")
    ]
    try:
        sel = selectors.LabelSelector.parse(str(spec.get("selector", "")))
        mode = workloads.Mode(str(spec.get("mode")))
    except (errors.ValidationError, ValueError) as exc:
        problems.append(
            _problem(
                origin,
                "spec",
                f"needs selector (kubectl syntax) and mode (visibility, alert, enforce): {exc}",
            )
        )
    priority = spec.get("priority", 100)
    if isinstance(priority, bool) or not isinstance(priority, int):
        problems.append(_problem(origin, "spec.priority", "expected an integer"))
    if problems:
        raise InvalidError(problems)
    return ModeScope(doc["metadata"]["name"], sel, mode, priority)


def with_modes(est: estate.Estate, scopes: list[ModeScope]) -> estate.Estate:
    """Workloads' modes after mode scopes (a matching scope overrides the workload's own mode)."""
    if not scopes:
        return est
    ordered = sorted(scopes, key=lambda s: (s.priority, s.name))
    changed = []
    for w in est.workloads:
        own = labelrules.effective_labels(w, est.label_rules)
        scope = next((s for s in ordered if s.selector.matches(own)), None)
        changed.append(
            w if scope is None or scope.mode is w.mode else dataclasses.replace(w, mode=scope.mode)
        )
    return est.with_workloads(tuple(changed))


def compose(
    policy: estate.Estate,
    live: list[Doc],
    cache: WorkloadCache,
    control_plane: tuple[estate.Endpoint, ...],
    *,
    version: int,
    etags: Mapping[str, str] | None = None,
) -> estate.Estate:
    """The estate agents get: policy of a version, the live inventory, and the server's own
    control-plane endpoints (always kept, whatever the Settings say: nobody is locked out)."""
    etags = etags or {}
    found = [cache.model(d, etags.get(d["metadata"]["name"], "")) for d in live if d["kind"] == "Workload"]
    scopes = [mode_scope(d) for d in live if d["kind"] == "ModeScope"]
    control = tuple(sorted(set(policy.control_plane) | set(control_plane)))
    est = dataclasses.replace(
        policy,
        workloads=tuple(sorted(found, key=lambda w: w.name)),
        control_plane=control,
        version=f"v{version}",
    )
    return with_modes(est, scopes)


def endpoint(text: str) -> estate.Endpoint:
    """`10.0.0.1:8440` -> a TCP control-plane endpoint."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise errors.ValidationError(f"control-plane endpoint {text!r}: expected ADDRESS:PORT")
    return estate.Endpoint(addresses.network(host.strip("[]")), services.PortRange(int(port), int(port)))


def api_documents(docs: Iterable[Doc]) -> list[Doc]:
    """Policy-file documents as API objects: `List` items unpacked, each Policy split into Rules
    (with the policy's tier, its name as `policy`, and its owner as the rules' default owner)."""
    out: list[Doc] = []
    for doc in docs:
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(api_documents(doc["items"]))
        elif doc.get("kind") == "Policy" and isinstance(doc.get("spec"), dict):
            out.extend(_split(doc))
        else:
            out.append(doc)
    return out


def _split(doc: Doc) -> list[Doc]:
    spec = doc["spec"]
    policy = doc.get("metadata", {}).get("name", DEFAULT_POLICY)
    rules = spec.get("rules") if isinstance(spec.get("rules"), list) else []
    out = []
    for rule in rules:
        if not isinstance(rule, dict):
            raise errors.ValidationError(f"policy {policy}: every rule must be a mapping", "spec.rules")
        body = {k: v for k, v in rule.items() if k != "name"}
        if "owner" in spec and "owner" not in body:
            body["owner"] = spec["owner"]
        out.append(
            {
                "apiVersion": kinds.API_VERSION,
                "kind": "Rule",
                "metadata": {"name": rule.get("name")},
                "spec": {"tier": spec.get("tier"), "policy": policy, **body},
            }
        )
    return out


def policy_file_documents(docs: Iterable[Doc]) -> list[Doc]:
    """API objects back as policy-file documents (Rules grouped into Policies), for export."""
    items, _, _ = loader_items(docs)
    return items
