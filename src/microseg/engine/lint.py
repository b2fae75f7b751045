"""The policy linter: what a policy says that it probably does not mean.

Fed by a PolicyEngine (its estate, rule book and compiled rulesets) and by `coverage` (which rule
decides what); feeds `microseg lint`, the warnings of `validate`, and the server's diffs.

Findings name objects (a rule by `tier/name`, an IP list, a service, an invariant) and the field
they are about (`from`, `to`, `services`), never files: the CLI knows where an object was written
and adds file:line; the server has no files.

What it deliberately does not do: refuse anything. Every finding is a warning; `lint --strict` is
what turns them into a failing exit code.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from microseg.engine import coverage, engine, rulebook
from microseg.model import labels, rules, selectors, services

SHOWN_RELATED = 5
"""Rules a message names before it says how many more there are."""


class Kind(StrEnum):
    """What a finding is about."""

    NO_MATCH = "selector-matches-nothing"
    SHADOWED = "shadowed"
    REDUNDANT = "redundant"
    ALLOW_UNDER_DENY = "allow-under-deny"
    NEVER_MATCHES = "never-matches"
    ENFORCED_NOWHERE = "enforced-nowhere"
    UNUSED_IP_LIST = "unused-ip-list"
    UNUSED_SERVICE = "unused-service"
    ANY_TO_ANY = "any-to-any"
    PARTIAL = "analysis-partial"


@dataclass(frozen=True)
class Finding:
    """One warning about one object."""

    kind: Kind
    obj: str
    """`Rule`, `IPList`, `Service`, `Invariant`, or `Estate` for the analysis itself."""
    name: str
    """A rule's `tier/name`, otherwise the object's name."""
    message: str
    field: str = ""
    """The object's field the finding is about (`from`, `to`, `services`), or empty."""
    hint: str = ""
    """A likely fix, e.g. `did you mean role=cache?`."""
    related: tuple[str, ...] = ()
    """Other objects involved (the earlier rules that decide instead)."""

    def to_dict(self) -> dict[str, object]:
        """The JSON form (the CLI adds file and line)."""
        return {
            "kind": self.kind.value,
            "object": self.obj,
            "name": self.name,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
            "related": list(self.related),
        }

    def __str__(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")


def lint(eng: engine.PolicyEngine) -> list[Finding]:
    """Every finding about the engine's estate, sorted by object, name and kind."""
    unmatched = unmatched_selectors(eng)
    found = [*unmatched, *unused_objects(eng), *any_to_any(eng), *decisions(eng, {f.name for f in unmatched})]
    return sorted(found, key=lambda f: (f.obj, f.name, f.kind.value, f.field, f.message))


# -- selectors that match no workload ----------------------------------------------------------


def unmatched_selectors(eng: engine.PolicyEngine) -> list[Finding]:
    """Selector peers of rules and invariants that no workload's effective labels satisfy."""
    label_sets = {eng.effective_labels(name) for name in eng.workload_names()}
    in_use = _values_by_key(label_sets)
    matches: dict[selectors.LabelSelector, bool] = {}
    found: list[Finding] = []
    for obj, name, side, selector in _selector_peers(eng):
        if selector not in matches:
            matches[selector] = any(selector.matches(own) for own in label_sets)
        if not matches[selector]:
            hint = _did_you_mean(selector, in_use, label_sets)
            found.append(
                Finding(
                    Kind.NO_MATCH,
                    obj,
                    name,
                    f"selector {selector} in `{side}` matches no workload" + _why_not(selector, in_use),
                    side,
                    hint,
                )
            )
    return found


def _selector_peers(eng: engine.PolicyEngine) -> Iterable[tuple[str, str, str, selectors.LabelSelector]]:
    for br in _user_rules(eng):
        for side, peers in (("from", br.rule.sources), ("to", br.rule.destinations)):
            for peer in dict.fromkeys(p.selector for p in peers if isinstance(p, selectors.SelectorPeer)):
                yield "Rule", br.rule.ref, side, peer
    for inv in eng.estate.invariants:
        for side, peers in (("from", inv.sources), ("to", inv.destinations)):
            for peer in dict.fromkeys(p.selector for p in peers if isinstance(p, selectors.SelectorPeer)):
                yield "Invariant", inv.name, side, peer


def _values_by_key(label_sets: Iterable[Mapping[str, str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for own in label_sets:
        for key, value in own.items():
            found[key].add(value)
    return dict(found)


def _why_not(selector: selectors.LabelSelector, in_use: dict[str, set[str]]) -> str:
    """The first requirement that no workload can meet on its own, said plainly."""
    for req in selector.requirements:
        if req.operator in (selectors.Operator.IN, selectors.Operator.EXISTS) and req.key not in in_use:
            return f": no workload has a label `{req.key}`"
        if req.operator is selectors.Operator.IN and not set(req.values) & in_use.get(req.key, set()):
            shown = ", ".join(sorted(in_use[req.key])[:10])
            return f": no workload has {req} (values of `{req.key}` in use: {shown})"
    return ": no workload has all of these labels together"


def _did_you_mean(
    selector: selectors.LabelSelector, in_use: dict[str, set[str]], label_sets: set[labels.Labels]
) -> str:
    """`did you mean role=cache?` when replacing unknown keys and values with the closest ones in
    use gives a selector that matches some workload."""
    fixed = tuple(_closest(req, in_use) for req in selector.requirements)
    if fixed == selector.requirements:
        return ""
    candidate = selectors.LabelSelector(fixed)
    if not any(candidate.matches(own) for own in label_sets):
        return ""
    return f"did you mean {candidate}?"


def _closest(req: selectors.Requirement, in_use: dict[str, set[str]]) -> selectors.Requirement:
    if req.operator not in (selectors.Operator.IN, selectors.Operator.EXISTS):
        return req  # NotIn and DoesNotExist hold for a missing key: they are not why nothing matches
    key = req.key
    if key not in in_use:
        close = difflib.get_close_matches(key, in_use, n=1, cutoff=0.6)
        key = close[0] if close else key
    known = in_use.get(key, set())
    values = tuple(
        v if v in known else next(iter(difflib.get_close_matches(v, known, n=1, cutoff=0.5)), v)
        for v in req.values
    )
    return selectors.Requirement(key, req.operator, values)


# -- unused objects and any-to-any -------------------------------------------------------------


def unused_objects(eng: engine.PolicyEngine) -> list[Finding]:
    """IP lists and services that no rule (enabled or not), invariant or setting refers to."""
    est = eng.estate
    peers = [p for r in est.rules for p in (*r.sources, *r.destinations)]
    peers += [p for inv in est.invariants for p in (*inv.sources, *inv.destinations)]
    lists = {p.name for p in peers if isinstance(p, selectors.IpListPeer)} | {est.quarantine_allow}
    used_services = {s.name for r in est.rules for s in r.services}
    used_services |= {s.name for inv in est.invariants for s in inv.services}
    unused_list = "IP list {} is used by no rule, invariant or setting"
    found = [
        Finding(Kind.UNUSED_IP_LIST, "IPList", i.name, unused_list.format(i.name))
        for i in est.ip_lists
        if i.name not in lists
    ]
    found += [
        Finding(Kind.UNUSED_SERVICE, "Service", s.name, f"service {s.name} is used by no rule or invariant")
        for s in est.services
        if s.name not in used_services
    ]
    return found


def any_to_any(eng: engine.PolicyEngine) -> list[Finding]:
    """Allow rules from `any` to `any`: everything, everywhere, on their services."""
    return [
        Finding(
            Kind.ANY_TO_ANY,
            "Rule",
            br.rule.ref,
            f"rule {br.rule.ref} allows any -> any on {_services(br.rule.services)}",
            "from",
            "name the workloads or addresses it is meant for",
        )
        for br in _user_rules(eng)
        if br.rule.action is rules.Action.ALLOW and br.rule.any_source and br.rule.any_destination
    ]


def _services(svcs: tuple[services.Service, ...]) -> str:
    if any(s.name == services.ANY_SERVICE.name for s in svcs):
        return "every protocol and port"
    return ", ".join(s.name.removeprefix("inline:") for s in svcs)  # inline ports: as written


# -- which rule decides: shadowed, redundant, unreachable, enforced nowhere --------------------


def decisions(eng: engine.PolicyEngine, no_match: set[str]) -> list[Finding]:
    """Rules that never decide a connection, and rules that no host enforces (`no_match`: rules
    already reported for a selector that matches nothing, which explains why they match nothing).
    A walk cut short by the step budget claims nothing: it says so instead."""
    covered = coverage.coverage(eng)
    if not covered.complete:
        said = f"the policy is too large to check every rule for shadowing ({coverage.MAX_STEPS} steps): "
        return [Finding(Kind.PARTIAL, "Estate", "", said + "shadowed and unreachable rules are not reported")]
    enforced = _enforced_refs(eng)
    found: list[Finding] = []
    for br in _user_rules(eng):
        seen = covered.rules.get(br.index, coverage.RuleCoverage())
        if not seen.matched:
            if br.rule.ref not in no_match:
                found.append(_never_matches(br))
        elif not seen.decided:
            found.append(_preempted(eng.book, br, seen.preempted_by))
        elif br.rule.ref not in enforced:
            found.append(_enforced_nowhere(br))
    return found


def _never_matches(br: rulebook.BookRule) -> Finding:
    return Finding(
        Kind.NEVER_MATCHES,
        "Rule",
        br.rule.ref,
        f"rule {br.rule.ref} matches no connection: nothing is on both its `from` and `to` sides "
        "except a workload talking to itself (always allowed)",
    )


def _enforced_nowhere(br: rulebook.BookRule) -> Finding:
    return Finding(
        Kind.ENFORCED_NOWHERE,
        "Rule",
        br.rule.ref,
        f"rule {br.rule.ref} is enforced on no host: no managed workload is on its `from` or `to` "
        "side (it decides `explain` answers, but no agent carries it)",
    )


def _preempted(book: rulebook.RuleBook, br: rulebook.BookRule, by: set[int]) -> Finding:
    """A rule that matches traffic but never decides it: named after who decides instead."""
    rule = br.rule
    deciders = [book.rules[i].rule for i in sorted(by) if i != coverage.SYSTEM]
    names = tuple(r.ref for r in deciders) + (("the control-plane channel",) if coverage.SYSTEM in by else ())
    shown = _few(names)
    actions = {r.action for r in deciders} | ({None} if coverage.SYSTEM in by else set())
    if actions == {rule.action} and rule.action is not rules.Action.PASS:
        kind = Kind.REDUNDANT
        said = f"is redundant: earlier rule(s) with the same action ({shown}) already {rule.action.value}"
    elif rule.action is rules.Action.ALLOW and actions == {rules.Action.DENY}:
        kind, said = Kind.ALLOW_UNDER_DENY, f"allows nothing: deny rule(s) above ({shown}) block"
    else:
        kind, said = Kind.SHADOWED, f"is shadowed: earlier rule(s) ({shown}) decide"
    said += " everything it matches"
    return Finding(kind, "Rule", rule.ref, f"rule {rule.ref} {said}", related=names)


def _few(names: tuple[str, ...]) -> str:
    more = len(names) - SHOWN_RELATED
    return ", ".join(names[:SHOWN_RELATED]) + (f" and {more} more" if more > 0 else "")


def _enforced_refs(eng: engine.PolicyEngine) -> set[str]:
    """Rules some managed workload's document carries (entries that can match on that host)."""
    refs: set[str] = set()
    for name in eng.workload_names():
        if eng.workload(name).managed:
            compiled = eng.host_ruleset(name)
            refs.update(e.ref for e in (*compiled.ingress, *compiled.egress))
    return refs


def _user_rules(eng: engine.PolicyEngine) -> list[rulebook.BookRule]:
    """Rules of the book that the estate declares (not the built-in quarantine rules)."""
    declared = {r.ref for r in eng.estate.rules}
    return [br for br in eng.book.rules if br.rule.ref in declared]
