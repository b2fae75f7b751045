"""Load policy files (files and directories) into one Estate, or report every problem at once.

The flow, one screen:

    files --nodes.parse--> documents (values + line of every field path)
          --_expand------> (kind, reader, fields) per document or List item; header checked
          --kinds.*------> named objects ---checks.unique / tier_orders / quarantine_first--> known names
          --policies-----> rules (need the known names) --checks.rule_clashes
          --invariants---> reachability statements (same peers and services as rules)
          --settings-----> control plane, quarantine allow list
          --checks.overlaps--> canonical.ordered(Estate), or PolicyFileError with every problem

Nothing is returned when anything is wrong: a PolicyFileError lists every problem of every file
with file, line and field path.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from microseg import errors
from microseg.model import estate, rules, tiers
from microseg.model.invariants import Invariant
from microseg.policyfile import canonical, checks, invariants, kinds, nodes, policies
from microseg.policyfile.reader import Reader, describe, suggest

BUILDERS: dict[str, Callable[[Reader, dict[str, Any]], kinds.Built]] = {
    "Workload": kinds.workload,
    "IPList": kinds.ip_list,
    "Service": kinds.service,
    "Tier": kinds.tier,
    "LabelRule": kinds.label_rule,
}
KINDS = (*BUILDERS, "Policy", "Invariant", "Settings", "List")
SUFFIXES = (".yaml", ".yml")

Entry = tuple[str, Reader, dict[str, Any]]


def load(paths: Sequence[str | Path]) -> estate.Estate:
    """Load files and directories (recursively: *.yaml and *.yml in name order, hidden ones
    skipped) into one estate; raise PolicyFileError listing every problem."""
    docs, problems = read(paths)
    return _build(docs, problems)


def read(
    paths: Sequence[str | Path], suffixes: tuple[str, ...] = SUFFIXES
) -> tuple[list[nodes.Document], list[errors.Problem]]:
    """Every YAML document of the files (and directories) named, and what was wrong reading them."""
    problems: list[errors.Problem] = []
    docs: list[nodes.Document] = []
    for file in find_files(paths, problems, suffixes):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(errors.Problem(str(file), 0, "", f"cannot read the file: {exc}"))
            continue
        parsed, found = nodes.parse(text, str(file))
        docs.extend(parsed)
        problems.extend(found)
    return docs, problems


def load_text(text: str, filename: str = "<text>") -> estate.Estate:
    """Load one YAML text (tests, the API); `filename` is what problems name."""
    docs, problems = nodes.parse(text, filename)
    return _build(docs, problems)


def load_data(data: Any, filename: str = "<data>") -> estate.Estate:
    """Load documents already parsed (a mapping, or a list of them: JSON from the API); problems
    carry the same field paths as `load_text`'s, with no line. Text is taken as it is, never
    re-read as YAML, so any Unicode (emoji, quotes, `: # &`) is just text."""
    found = data if isinstance(data, list) else [data]
    return _build([_document(filename, i, item) for i, item in enumerate(found)], [])


def _document(filename: str, index: int, data: Any) -> nodes.Document:
    """A Document over parsed data; scalars other than text keep the spelling JSON gives them
    (`true`, not Python's `True`), as a YAML reader would see them."""
    doc = nodes.Document(filename, index, data)
    stack: list[tuple[nodes.Path, Any]] = [((), data)]
    while stack:  # iterative: the depth of the data is the caller's to bound, not the stack's
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, bool | int | float):
            doc.texts[path] = json.dumps(value)
    return doc


def find_files(
    paths: Sequence[str | Path], problems: list[errors.Problem], suffixes: tuple[str, ...] = SUFFIXES
) -> list[Path]:
    """The files named, and those below the directories named; a missing path is a problem."""
    out: dict[Path, None] = {}  # ordered and without repeats: a file named twice loads once
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.update(dict.fromkeys(policy_files(path, suffixes)))
        elif path.is_file():
            out[path] = None
        else:
            problems.append(errors.Problem(str(path), 0, "", "no such file or directory"))
    return list(out)


def policy_files(directory: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """*.yaml and *.yml (or `suffixes`) below `directory`, in name order; hidden ones (.git,
    .github) skipped."""
    found = []
    for path in directory.rglob("*"):
        parts = path.relative_to(directory).parts
        if path.suffix in suffixes and path.is_file() and not any(p.startswith(".") for p in parts):
            found.append((parts, path))
    return [path for _, path in sorted(found)]


def _build(docs: list[nodes.Document], problems: list[errors.Problem]) -> estate.Estate:
    entries = [entry for doc in docs for entry in _expand(Reader(doc, problems), doc.data)]
    first = _named(entries)
    declared = {name: item.value for name, item in first["Tier"].items()}
    all_tiers = {t.name: t for t in tiers.BUILTIN_TIERS} | declared
    built_tiers = {n: t for n, t in all_tiers.items() if t is not None}
    checks.tier_orders(built_tiers, first["Tier"])
    checks.quarantine_first(built_tiers, first["Tier"])
    known = policies.Known(
        all_tiers,
        {name: item.value for name, item in first["IPList"].items()},
        {name: item.value for name, item in first["Service"].items()},
    )
    found_rules = _rules([(r, data) for kind, r, data in entries if kind == "Policy"], known)
    guards = _invariants([(r, data) for kind, r, data in entries if kind == "Invariant"], known)
    control, allow = _settings([(r, data) for kind, r, data in entries if kind == "Settings"], known)
    checks.overlaps(list(first["Workload"].values()))
    if problems:
        raise errors.PolicyFileError(problems)

    def values(kind: str) -> tuple[Any, ...]:
        return tuple(item.value for item in first[kind].values() if item.value is not None)

    return canonical.ordered(
        estate.Estate(
            workloads=values("Workload"),
            label_rules=values("LabelRule"),
            ip_lists=values("IPList"),
            services=values("Service"),
            tiers=tuple(t for t in all_tiers.values() if t is not None),
            rules=tuple(found_rules),
            control_plane=control,
            quarantine_allow=allow,
            invariants=guards,
        )
    )


def _named(entries: list[Entry]) -> dict[str, dict[str, checks.Named]]:
    """Kind -> name -> the first definition (built, or None when broken); duplicates reported."""
    seq = itertools.count()
    named: dict[str, list[checks.Named]] = {kind: [] for kind in BUILDERS}
    for kind, r, data in entries:
        if kind in BUILDERS:
            name, value = BUILDERS[kind](r, data)
            if name is not None:
                named[kind].append(checks.Named(kind, name, value, r, next(seq)))
    return {kind: checks.unique(items) for kind, items in named.items()}


def _expand(r: Reader, data: Any) -> list[Entry]:
    """A document, or the items of a `kind: List`, each with its kind and a reader of its own."""
    if not isinstance(data, dict):
        r.error((), f"expected a mapping with apiVersion and kind, got {describe(data)}")
        return []
    api, kind = data.get("apiVersion"), data.get("kind")
    if "apiVersion" not in data or "kind" not in data:
        r.mapping(data, (), ("apiVersion", "kind", "metadata", "spec", "items"), ("apiVersion", "kind"))
        return []
    if api != kinds.API_VERSION:
        plain = f"unsupported apiVersion {api!r} (expected {kinds.API_VERSION})"
        r.error(("apiVersion",), _k8s_hint(api, kind) or plain)
        return []
    if kind not in KINDS:
        r.error(("kind",), f"unknown kind {kind!r}{suggest(str(kind), KINDS, 'kinds')}")
        return []
    if kind != "List":
        r.mapping(data, (), ("apiVersion", "kind", "metadata", "spec"))
        return [(kind, r, data)]
    r.mapping(data, (), ("apiVersion", "kind", "items"), ("items",))
    out: list[Entry] = []
    for path, item in r.items(data.get("items", []), ("items",)):
        out.extend(_expand(r.item(path), item))
    return out


_KUBERNETES_API = re.compile(r"^(v1|v1beta1|[a-z0-9-]+(\.[a-z0-9-]+)*/v[0-9]+((alpha|beta)[0-9]+)?)$")


def _k8s_hint(api: Any, kind: Any) -> str:
    """A hint for a Kubernetes manifest in a policy tree (`apps/v1` Deployment, `v1` Pod,
    `networking.k8s.io/v1` NetworkPolicy, a Calico or Cilium policy), else nothing."""
    if not isinstance(api, str) or not isinstance(kind, str) or not _KUBERNETES_API.fullmatch(api):
        return ""
    if api.startswith("microseg.io/"):
        return ""  # ours, of another version: the plain message says which one is expected
    return (
        f"this is a Kubernetes manifest ({api} {kind}), not a microseg policy file: "
        "`microseg k8s import -f` makes its pods workloads, `microseg k8s reachability -f` analyses it; "
        "keep manifests outside the policy tree"
    )


def _rules(docs: list[tuple[Reader, dict[str, Any]]], known: policies.Known) -> list[rules.Rule]:
    found: list[checks.RuleAt] = []
    names: list[checks.Named] = []
    for seq, (r, data) in enumerate(docs):
        name, built = policies.policy(r, data, known)
        if name is not None:
            names.append(checks.Named("Policy", name, None, r, seq))
        found.extend(built)
    checks.unique(names)
    checks.rule_clashes(found, known.ip_lists)
    return [item.rule for item in found if item.rule is not None]


def _invariants(docs: list[tuple[Reader, dict[str, Any]]], known: policies.Known) -> tuple[Invariant, ...]:
    found = []
    for seq, (r, data) in enumerate(docs):
        name, built = invariants.invariant(r, data, known)
        if name is not None:
            found.append(checks.Named("Invariant", name, built, r, seq))
    return tuple(item.value for item in checks.unique(found).values() if item.value is not None)


def _settings(
    docs: list[tuple[Reader, dict[str, Any]]], known: policies.Known
) -> tuple[tuple[estate.Endpoint, ...], str | None]:
    if not docs:
        return (), None
    for r, _ in docs[1:]:
        r.error(("kind",), f"only one Settings document is allowed (the first is at {docs[0][0].where(())})")
    r, data = docs[0]
    found = kinds.settings(r, data)
    if found is None:
        return (), None
    control, allow = found
    if allow is not None and allow not in known.ip_lists:
        r.error(("spec", "quarantineAllow"), f"unknown ip list '{allow}'{suggest(allow, known.ip_lists)}")
    return control, allow
