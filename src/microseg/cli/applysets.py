"""The apply set a `microseg apply -f PATH` belongs to when no `--set NAME` is given.

Used by `remote.apply`; the server keeps the set's memberships (`server/applysets.py`). The name
comes from the paths as given, made relative to the current directory when they are inside it,
so the same command run from the same place (a CI job in its checkout) names the same set, and
`apply -f policies/prod --prune` cannot prune what `apply -f policies/dev` applied.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/,+@=-]{0,199}$")
"""What the server accepts as a set name (`models.APPLY_SET`)."""
PREFIX = "files:"


def default_name(files: Iterable[Path]) -> str:
    """`files:` and the sorted paths (`files:policies/prod`), or a digest of them when they hold
    characters a set name cannot or are too long."""
    paths = ",".join(sorted({_portable(p) for p in files}))
    name = PREFIX + paths
    if NAME.fullmatch(name):
        return name
    return PREFIX + hashlib.sha256(paths.encode()).hexdigest()[:24]


def checked(name: str) -> str:
    """A set name given with `--set`, or a UserError-worthy ValueError naming the grammar."""
    if not NAME.fullmatch(name):
        why = "1-200 letters, digits and _ . : / , + @ = -, starting with a letter or digit"
        raise ValueError(f"apply set {name!r}: {why}")
    return name


def _portable(path: Path) -> str:
    """The path relative to the current directory when it is inside it, else absolute; `/`s."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute.as_posix()
    return relative.as_posix() or "."
