"""Loading an estate for a command: the policy files named with `-f`, or the example estate shipped
in the package when `--example` says so.

Nothing is implied: a command given neither fails (exit 2) rather than answer about the example,
and a directory without policy files is an error naming it, not an empty estate that validates.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from microseg import errors, policyfile
from microseg.engine import engine
from microseg.model import estate
from microseg.policyfile import loader

Example = Annotated[
    bool, typer.Option("--example", help="use the example estate shipped with microseg (instead of -f)")
]


def examples_dir() -> Path:
    """The example estate shipped inside the package (the `examples/` folder of the repository)."""
    return Path(str(resources.files("microseg") / "examples" / "estate"))


def load(paths: list[Path] | None, *, example: bool = False) -> estate.Estate:
    """Load the policy files named, or the example estate when `example`; exactly one of the two."""
    if example and paths:
        raise errors.ValidationError("give policy files with -f or --example, not both", "file")
    if example:
        return policyfile.load([examples_dir()])
    if not paths:
        raise errors.ValidationError("no policy files: give -f FILE_OR_DIRECTORY (or --example)", "file")
    empty = [p for p in paths if p.is_dir() and not loader.policy_files(p)]
    if empty:
        raise errors.PolicyFileError(
            [
                errors.Problem(str(p), 0, "", "no policy files (*.yaml, *.yml) in this directory")
                for p in empty
            ]
        )
    return policyfile.load(paths)


def build(paths: list[Path] | None, *, example: bool = False) -> engine.PolicyEngine:
    """Load and compile."""
    return engine.PolicyEngine(load(paths, example=example))
