"""The small JSON files lab processes leave for the lab to read (service counters, traffic stats,
the state file): written whole and renamed into place, so a reader sees the old file or the new
one, never half of one; read as None while a file is not there yet."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | Path, data: Any, *, mode: int = 0o644, indent: int | None = None) -> None:
    """Replace `path` with `data` as JSON in one rename."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=indent)
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is not there (yet) or not readable as one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
