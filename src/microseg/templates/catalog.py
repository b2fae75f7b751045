"""The shipped segmentation templates: read from this package's YAML files, rendered into a
checked draft.

    <name>.yaml --_read--> Template (parameters, band, documents with placeholders)
    --set k=v  --parameters.resolve--> scope of checked values
    documents  --expand.expand(scope)--> policy-file documents
               --policyfile.load_text--> Estate (the real loader: names, priorities, references)
               --dumper.documents------> Rendered (canonical documents, the estate, the command)

A rendered template loads on its own: every Service it uses is among its documents; an IP list a
parameter names (`clients=office`) is the one thing it takes from where it is applied. Loading
it next to an estate may still clash (two instances at the same priority); the loader, `microseg
validate` or the server say where.

What it deliberately does not do: talk to a server or write files (the CLI does), or decide what
traffic the rules allow (the engine does; the tests ask it).
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from microseg import errors, policyfile
from microseg.model import estate
from microseg.policyfile import dumper, kinds, reader
from microseg.templates import expand, parameters
from microseg.templates.parameters import Parameter

Doc = dict[str, Any]
FIELDS = {"name", "summary", "description", "bands", "parameters", "distinct", "documents"}


@dataclass(frozen=True)
class Band:
    """The priorities a template's instances use by default, in one tier."""

    tier: str
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.tier} {self.first}-{self.last}"


@dataclass(frozen=True)
class Rendered:
    """A template applied to values: the documents to review or send, and what they load into."""

    template: str
    given: dict[str, str]
    """The parameters `--set` gave."""
    values: dict[str, str]
    """Every parameter's value (given, else the default), as text."""
    documents: list[Doc]
    estate: estate.Estate

    @property
    def command(self) -> str:
        """The command that makes these documents again."""
        sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in self.given.items())
        return f"microseg template apply {self.template} {sets}".rstrip()

    def yaml(self) -> str:
        """The documents as one policy file, with a header saying where they came from."""
        shown = " ".join(f"{k}={v}" for k, v in self.values.items())
        head = (
            f"# Made by `{self.command}`\n# with {shown}.\n"
            "# A draft: review it, then `microseg validate -f DIR` and `microseg diff`.\n"
        )
        return head + policyfile.dump(self.estate)


@dataclass(frozen=True)
class Template:
    """One segmentation template."""

    name: str
    summary: str
    description: str
    bands: tuple[Band, ...]
    parameters: tuple[Parameter, ...]
    distinct: tuple[tuple[str, ...], ...]
    """Groups of parameters that must not have equal values (dev_env and prod_env)."""
    documents: tuple[Doc, ...]

    def parameter(self, name: str) -> Parameter:
        """A declared parameter by name."""
        return next(p for p in self.parameters if p.name == name)

    def render(self, given: dict[str, str]) -> Rendered:
        """The template with `given` values (defaults for the rest), checked by the real loader."""
        scope = parameters.resolve(self.name, self.parameters, given)
        for group in self.distinct:
            if len({str(scope[name]) for name in group}) < len(group):
                shown = ", ".join(f"{n}={scope[n]}" for n in group)
                raise errors.UserError(f"template {self.name}: {' and '.join(group)} must differ ({shown})")
        docs = expand.expand(list(self.documents), scope)
        values = {p.name: given.get(p.name, p.default or "") for p in self.parameters}
        built = _load(self.name, values, docs, parameters.ip_lists(scope))
        return Rendered(self.name, dict(given), values, dumper.documents(built), built)

    def example(self, given: dict[str, str] | None = None) -> Rendered:
        """Rendered with `given`, and each required parameter not given set to its example."""
        examples = {p.name: p.example or "" for p in self.parameters if p.required}
        return self.render({**examples, **(given or {})})


def _load(name: str, values: dict[str, str], docs: list[Doc], ip_lists: list[str]) -> estate.Estate:
    """The documents through the real loader. An IP list a parameter names is the estate's (the
    files or the draft the result goes to), so a stand-in is loaded beside the documents for the
    check and left out of the result: applying it where no such list exists is refused there."""
    text = yaml.safe_dump_all([*docs, *(_stand_in(n) for n in dict.fromkeys(ip_lists))], sort_keys=False)
    try:
        built = policyfile.load_text(text, f"template {name}")
    except errors.PolicyFileError as exc:
        # Values are checked one by one; what only the whole can break (a rule name past 64
        # characters) is the loader's to find, said in terms of the parameters.
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        raise errors.UserError(f"template {name} with {shown} does not make a valid policy:\n{exc}") from exc
    return dataclasses.replace(built, ip_lists=tuple(i for i in built.ip_lists if i.name not in ip_lists))


def _stand_in(ip_list: str) -> Doc:
    """An IP list of the given name, for checking only (never in a result)."""
    spec = {"cidrs": ["192.0.2.0/32"], "description": "stand-in"}
    return {"apiVersion": kinds.API_VERSION, "kind": "IPList", "metadata": {"name": ip_list}, "spec": spec}


def names() -> list[str]:
    """The shipped templates' names, sorted."""
    return sorted(catalog())


def get(name: str) -> Template:
    """A shipped template by name (UserError naming the known ones otherwise)."""
    found = catalog().get(name)
    if found is None:
        raise errors.UserError(f"unknown template {name!r}{reader.suggest(name, catalog(), 'templates')}")
    return found


@functools.cache
def catalog() -> dict[str, Template]:
    """Every shipped template, read once."""
    out: dict[str, Template] = {}
    for entry in resources.files(__package__ or "microseg.templates").iterdir():
        if entry.name.endswith(".yaml"):
            template = _read(entry.name, yaml.safe_load(entry.read_text(encoding="utf-8")))
            out[template.name] = template
    return out


def _read(file: str, data: Any) -> Template:
    """A template file -> Template; a malformed one is a bug in microseg (PermanentError)."""
    if not isinstance(data, dict) or not set(data) <= FIELDS or "documents" not in data:
        raise errors.PermanentError(f"template file {file}: expected a mapping with {sorted(FIELDS)}")
    try:
        params = tuple(_parameter(name, spec) for name, spec in data["parameters"].items())
        bands = tuple(Band(b["tier"], int(b["first"]), int(b["last"])) for b in data["bands"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise errors.PermanentError(f"template file {file}: bad parameters or bands ({exc!r})") from exc
    return Template(
        name=str(data["name"]),
        summary=str(data["summary"]),
        description=str(data.get("description", "")).strip(),
        bands=bands,
        parameters=params,
        distinct=tuple(tuple(group) for group in data.get("distinct", [])),
        documents=tuple(data["documents"]),
    )


def _parameter(name: str, spec: dict[str, Any]) -> Parameter:
    default = spec.get("default")
    return Parameter(
        name=name,
        kind=parameters.Kind(spec["type"]),
        description=str(spec["description"]),
        default=None if default is None else str(default),
        example=None if spec.get("example") is None else str(spec["example"]),
        port_from=spec.get("portFrom"),
    )
