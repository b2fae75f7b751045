"""Load policy files (files and directories) into one Estate, or report every problem at once.

The flow: files -> `nodes.parse` (documents with lines) -> header check -> `kinds` builders for
named objects -> `policies` for rules (which need the names) -> estate-wide checks (duplicates,
priority and order ties, overlapping workload addresses, dangling references). Nothing is returned
when anything is wrong: a PolicyFileError lists every problem with file, line and field path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microseg import errors
from microseg.model import estate, tiers
from microseg.policyfile import kinds, nodes, policies
from microseg.policyfile.reader import Reader

BUILDERS = {
    "Workload": kinds.workload,
    "IPList": kinds.ip_list,
    "Service": kinds.service,
    "Tier": kinds.tier,
    "LabelRule": kinds.label_rule,
}


def load(paths: Sequence[str | Path]) -> estate.Estate:
    """Load files and directories (recursively, *.yaml and *.yml, in name order)."""
    problems: list[errors.Problem] = []
    docs: list[nodes.Document] = []
    for file in _files(paths, problems):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(errors.Problem(str(file), 0, "", f"cannot read: {exc}"))
            continue
        parsed, found = nodes.parse(text, str(file))
        docs.extend(parsed)
        problems.extend(found)
    return _build(docs, problems)


def load_text(text: str, filename: str = "<text>") -> estate.Estate:
    """Load one YAML text (for tests and the API)."""
    docs, problems = nodes.parse(text, filename)
    return _build(docs, problems)


def _files(paths: Sequence[str | Path], problems: list[errors.Problem]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            problems.append(errors.Problem(str(path), 0, "", "no such file or directory"))
    return out


def _build(docs: list[nodes.Document], problems: list[errors.Problem]) -> estate.Estate:
    state = _State(problems)
    for doc in docs:
        for item in _expand(doc, Reader(doc, problems)):
            state.add(item)
    result = state.finish()
    if problems:
        raise errors.PolicyFileError(problems)
    return result


def _expand(doc: nodes.Document, r: Reader) -> list[tuple[Reader, dict[str, Any]]]:
    """A document, or the items of a `kind: List`, each with a reader of its own."""
    data = r.mapping(
        doc.data, (), ("apiVersion", "kind", "metadata", "spec", "items"), ("apiVersion", "kind")
    )
    if data is None:
        return []
    if data.get("apiVersion") != kinds.API_VERSION:
        r.error(
            ("apiVersion",),
            f"unsupported apiVersion {data.get('apiVersion')!r} (expected {kinds.API_VERSION})",
        )
        return []
    if data.get("kind") not in kinds.KINDS:
        r.error(("kind",), f"unknown kind {data.get('kind')!r} (one of {', '.join(kinds.KINDS)})")
        return []
    if data["kind"] != "List":
        return [(r, data)]
    out = []
    for path, item in r.items(data.get("items"), ("items",)):
        sub = nodes.Document(doc.file, doc.index, item, _shift(doc.lines, path))
        out.extend(_expand(sub, Reader(sub, r.problems)))
    return out


def _shift(lines: dict[nodes.Path, int], prefix: nodes.Path) -> dict[nodes.Path, int]:
    return {p[len(prefix) :]: line for p, line in lines.items() if p[: len(prefix)] == prefix}


class _State:
    """Objects collected so far, by kind, with where each was first defined."""

    def __init__(self, problems: list[errors.Problem]) -> None:
        self.problems = problems
        self.named: dict[str, dict[str, kinds.Named]] = {k: {} for k in BUILDERS}
        self.policies: list[tuple[Reader, dict[str, Any]]] = []
        self.settings: list[tuple[Reader, dict[str, Any]]] = []

    def add(self, item: tuple[Reader, dict[str, Any]]) -> None:
        r, data = item
        kind = data["kind"]
        if kind == "Policy":
            self.policies.append(item)
        elif kind == "Settings":
            self.settings.append(item)
        else:
            name, value = BUILDERS[kind](r, data)
            if name is not None:
                self._remember(kinds.Named(kind, name, value, r, ("metadata", "name")))

    def _remember(self, named: kinds.Named) -> None:
        seen = self.named[named.kind]
        if named.name in seen:
            first = seen[named.name]
            named.reader.error(
                named.path,
                f"duplicate {named.kind} name {named.name} (first defined at "
                f"{first.reader.where(first.path)})",
            )
        else:
            seen[named.name] = named

    def values(self, kind: str) -> dict[str, Any]:
        return {n: x.value for n, x in self.named[kind].items() if x.value is not None}

    def finish(self) -> estate.Estate:
        declared = self.values("Tier")
        all_tiers = {t.name: t for t in tiers.BUILTIN_TIERS} | declared
        known = {"tiers": all_tiers, "ip_lists": self.values("IPList"), "services": self.values("Service")}
        rules = self._rules(known)
        control, allow = self._settings(known)
        self._check_tier_orders(all_tiers)
        workloads = tuple(self.values("Workload").values())
        self._check_overlaps()
        return estate.Estate(
            workloads=workloads,
            label_rules=tuple(self.values("LabelRule").values()),
            ip_lists=tuple(known["ip_lists"].values()),
            services=tuple(known["services"].values()),
            tiers=tuple(sorted(all_tiers.values())),
            rules=tuple(rules),
            control_plane=control,
            quarantine_allow=allow,
        )

    def _rules(self, known: dict[str, Any]) -> list[Any]:
        out = []
        by_name: dict[tuple[str, str], tuple[Reader, nodes.Path]] = {}
        by_priority: dict[tuple[str, int], tuple[Reader, nodes.Path, str]] = {}
        seen_policies: dict[str, tuple[Reader, nodes.Path]] = {}
        for r, data in self.policies:
            name, built = policies.policy(r, data, known)
            if name in seen_policies:
                first = seen_policies[name]
                r.error(
                    ("metadata", "name"),
                    f"duplicate Policy name {name} (first defined at {first[0].where(first[1])})",
                )
            elif name is not None:
                seen_policies[name] = (r, ("metadata", "name"))
            for path, rule in built:
                if (rule.tier, rule.name) in by_name:
                    fr, fp = by_name[(rule.tier, rule.name)]
                    r.error(
                        (*path, "name"),
                        f"duplicate rule name {rule.name} in tier {rule.tier} (first "
                        f"defined at {fr.where(fp)})",
                    )
                    continue
                by_name[(rule.tier, rule.name)] = (r, (*path, "name"))
                clash = by_priority.get((rule.tier, rule.priority))
                if clash is not None:
                    where = clash[0].where(clash[1])
                    message = (
                        f"priority {rule.priority} is already used by rule {clash[2]} in tier {rule.tier}"
                    )
                    r.error((*path, "priority"), f"{message} ({where}); priorities must be unique in a tier")
                    continue
                by_priority[(rule.tier, rule.priority)] = (r, (*path, "priority"), rule.name)
                out.append(rule)
        return out

    def _settings(self, known: dict[str, Any]) -> tuple[tuple[estate.Endpoint, ...], str | None]:
        if not self.settings:
            return (), None
        for r, _ in self.settings[1:]:
            r.error(
                ("kind",), f"only one Settings document is allowed (first at {self.settings[0][0].where(())})"
            )
        r, data = self.settings[0]
        control, allow = kinds.settings(r, data)
        if allow is not None and allow not in known["ip_lists"]:
            r.error(
                ("spec", "quarantineAllow"),
                f"unknown ip list '{allow}'{policies._suggest(allow, known['ip_lists'])}",
            )
            allow = None
        return control, allow

    def _check_tier_orders(self, all_tiers: dict[str, tiers.Tier]) -> None:
        by_order: dict[int, str] = {}
        for name, tier in sorted(all_tiers.items()):
            if tier.order in by_order:
                named = self.named["Tier"].get(name) or self.named["Tier"].get(by_order[tier.order])
                message = (
                    f"tier order {tier.order} is used by both {by_order[tier.order]} and {name}; "
                    "orders must be unique"
                )
                if named is not None:
                    named.reader.error(("spec", "order"), message)
                else:
                    self.problems.append(errors.Problem("<tiers>", 0, "spec.order", message))
            by_order[tier.order] = name

    def _check_overlaps(self) -> None:
        owners: list[tuple[Any, kinds.Named]] = []
        for named in self.named["Workload"].values():
            if named.value is None:
                continue
            for net in named.value.addresses:
                for other_net, other in owners:
                    if other_net.version == net.version and other_net.overlaps(net):
                        where = other.reader.where(("spec", "addresses"))
                        message = f"address {net} of workload {named.name} overlaps {other_net}"
                        named.reader.error(
                            ("spec", "addresses"), f"{message} of workload {other.name} ({where})"
                        )
                owners.append((net, named))
