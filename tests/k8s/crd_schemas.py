"""Schema checks for the Calico and Cilium manifests microseg exports: `problems(manifest)`.

The schemas in tests/k8s/schemas/ are hand transcriptions of the upstream CRDs' openAPIV3Schema
(JSON Schema draft 2020-12, `additionalProperties: false` wherever upstream lists fixed fields, so
a misspelt field fails); their `$comment`s name the upstream commits and what was left out. This
module picks the schema by apiVersion and kind, validates with `jsonschema`, and returns one
readable line per problem: the JSON path, then what is wrong.

The `cidr` (Cilium, as Kubernetes defines it: an address with a prefix length) and `ip-or-cidr`
(Calico nets: an address or a network) formats are checked here, since `jsonschema` does not know
them.

What it deliberately does not do: check Calico selector expressions or any cross-object reference
(a policy's tier exists, a named port exists); those are semantics, tested elsewhere.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions

SCHEMAS = Path(__file__).parent / "schemas"

KINDS = {
    ("projectcalico.org/v3", "Tier"): "calico-v3.json",
    ("projectcalico.org/v3", "GlobalNetworkPolicy"): "calico-v3.json",
    ("projectcalico.org/v3", "NetworkPolicy"): "calico-v3.json",
    ("cilium.io/v2", "CiliumNetworkPolicy"): "cilium-v2.json",
    ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"): "cilium-v2.json",
}
"""(apiVersion, kind) -> the schema file whose `$defs/<kind>` checks it."""


def problems(manifest: Mapping[str, Any]) -> list[str]:
    """Every way `manifest` breaks its kind's schema, as `$.json.path: message`; [] when valid."""
    if not isinstance(manifest, Mapping):
        return [f"$: expected a Kubernetes object (a mapping), got {type(manifest).__name__}"]
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in KINDS:
        known = ", ".join(f"{v} {k}" for v, k in KINDS)
        return [f"$: unknown apiVersion/kind {key[0]!r} {key[1]!r} (known: {known})"]
    found = _validator(*key).iter_errors(dict(manifest))
    return sorted(_describe(error) for error in found)


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    document = json.loads((SCHEMAS / KINDS[(api_version, kind)]).read_text())
    schema = {**document, "$ref": f"#/$defs/{kind}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=_formats())


def _formats() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks("cidr", raises=ValueError)(_is_cidr)
    checker.checks("ip-or-cidr", raises=ValueError)(_is_ip_or_cidr)
    return checker


def _is_cidr(value: object) -> bool:
    """Kubernetes' `cidr` format (Go's net.ParseCIDR): a prefix length is required, host bits may
    be set."""
    if not isinstance(value, str):
        return True
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length")
    ipaddress.ip_network(value, strict=False)
    return True


def _is_ip_or_cidr(value: object) -> bool:
    """Calico's nets (cnet.ParseCIDROrIP): an address, or a network with host bits allowed."""
    if isinstance(value, str):
        ipaddress.ip_network(value, strict=False)
    return True


def _describe(error: jsonschema.exceptions.ValidationError) -> str:
    """`$.spec.ingress[0].action: 'Drop' is not one of [...]`."""
    return f"{error.json_path}: {_message(error)}"


def _message(error: jsonschema.exceptions.ValidationError) -> str:
    """jsonschema's message, except where it would print a whole object: a failed `not` says the
    rule its schema's `$comment` states, a failed anyOf/oneOf over objects names the fields it
    wants or the alternative that came closest."""
    if error.validator == "not":
        return str(error.schema.get("$comment") or f"must not match {error.validator_value}")
    if error.validator in ("anyOf", "oneOf") and isinstance(error.instance, dict | list):
        return _alternatives(error)
    closest = jsonschema.exceptions.best_match(error.context or ())
    return error.message + (f" ({closest.json_path}: {closest.message})" if closest is not None else "")


def _alternatives(error: jsonschema.exceptions.ValidationError) -> str:
    wanted = [alt["required"][0] for alt in error.validator_value if list(alt) == ["required"]]
    if len(wanted) == len(error.validator_value):
        return f"needs {'exactly' if error.validator == 'oneOf' else 'at least'} one of {', '.join(wanted)}"
    if not error.context:
        return "matches more than one of the allowed forms"
    closest = jsonschema.exceptions.best_match(error.context)
    return f"matches none of the allowed forms (closest: {closest.json_path}: {closest.message})"
