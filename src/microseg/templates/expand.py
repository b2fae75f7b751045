"""Substitute checked parameter values into a template's parsed documents (never into YAML text).

Fed by `catalog` with the documents of a template file (already parsed YAML: dicts, lists,
scalars) and the scope `parameters.resolve` built; returns plain policy-file documents. The whole
language, in values only (mapping keys are never substituted):

    "${env}"                  the value itself, typed: `port: "${db_port}"` becomes an int
    "env=${env},role=web"     text with each placeholder replaced by its value
    "${priority+10}"          a sum of int values and literals (priorities of an instance)
    "${svc.name}"             a field of the current item of a `$each`
    - $each: services         in a list: one copy of `do` per item of the list parameter,
      as: svc                 with the item in scope as `svc` (fields name, port, index)
      do: {...}

Values cannot inject anything: they are checked label values, numbers or CIDRs, so they hold no
`${`, comma, `=` or space, and a replacement is never scanned again. A placeholder naming nothing
is a broken template (a PermanentError: the shipped templates are tested), not a user error.
"""

from __future__ import annotations

import re
from typing import Any

from microseg import errors
from microseg.templates.parameters import Scope

_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
EACH = "$each"


def expand(node: Any, scope: Scope) -> Any:
    """`node` with every placeholder replaced and every `$each` unrolled."""
    if isinstance(node, str):
        return _text(node, scope)
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            if isinstance(item, dict) and EACH in item:
                out.extend(_each(item, scope))
            else:
                out.append(expand(item, scope))
        return out
    if isinstance(node, dict):
        return {key: expand(value, scope) for key, value in node.items()}
    return node


def _each(loop: dict[str, Any], scope: Scope) -> list[Any]:
    if set(loop) != {EACH, "as", "do"}:
        raise errors.PermanentError(
            f"template: {EACH} needs exactly `{EACH}`, `as` and `do`, got {sorted(loop)}"
        )
    items = lookup(str(loop[EACH]), scope)
    if not isinstance(items, list):
        raise errors.PermanentError(f"template: {EACH} {loop[EACH]!r} is not a list parameter")
    return [expand(loop["do"], {**scope, str(loop["as"]): item}) for item in items]


def _text(text: str, scope: Scope) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return evaluate(whole.group(1), scope)

    def replace(match: re.Match[str]) -> str:
        value = evaluate(match.group(1), scope)
        if not isinstance(value, str | int):
            raise errors.PermanentError(f"template: ${{{match.group(1)}}} is a list; it cannot stand in text")
        return str(value)

    return _PLACEHOLDER.sub(replace, text)


def evaluate(expr: str, scope: Scope) -> Any:
    """One placeholder's value: a reference, or a sum of integer references and literals."""
    terms = [t.strip() for t in expr.split("+")]
    if len(terms) == 1:
        return lookup(terms[0], scope)
    total = 0
    for term in terms:
        value = int(term) if term.isdigit() else lookup(term, scope)
        if not isinstance(value, int) or isinstance(value, bool):
            raise errors.PermanentError(f"template: ${{{expr}}}: {term!r} is not a number")
        total += value
    return total


def lookup(ref: str, scope: Scope) -> Any:
    """`name` or `item.field` in the scope."""
    if not _REF.fullmatch(ref):
        raise errors.PermanentError(f"template: {ref!r} is not a parameter reference")
    name, _, field = ref.partition(".")
    if name not in scope:
        raise errors.PermanentError(
            f"template: unknown parameter {name!r} (known: {', '.join(sorted(scope))})"
        )
    value = scope[name]
    if not field:
        return value
    if not isinstance(value, dict) or field not in value:
        raise errors.PermanentError(f"template: {ref!r}: {name} has no field {field!r}")
    return value[field]
