"""What the host can tell the renderer about processes and users named in a document.

Fed by the document's entries and the processes of the agent's network namespace (`procfs`); feeds
the renderer's `cgroups` and `uids` maps. A process name is matched the way the engine matches it
(the executable path, its base name, or the process name, as a glob). A constraint maps to a cgroup
only when every matching process sits in one cgroup; anything else (no such process running, or
processes spread over several cgroups, or one in the root cgroup) is left out, and the renderer then
enforces that entry at port level and says so in a warning, never silently.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from microseg.agent import procfs
from microseg.model import ruleset


@dataclass(frozen=True)
class Knowledge:
    """The renderer's process and user maps."""

    cgroups: dict[str, str]
    uids: dict[str, int]


def matches(process: procfs.Process, pattern: str) -> bool:
    """The engine's rule (path or its base name), plus the process name for processes whose
    executable is an interpreter running under another name."""
    candidates = [process.name]
    if process.path:
        candidates += [process.path, os.path.basename(process.path)]
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def constraints(doc: ruleset.RulesetDocument | None) -> tuple[set[str], set[str]]:
    """The process patterns and user names `doc` asks for."""
    if doc is None:
        return set(), set()
    entries = (*doc.ingress, *doc.egress)
    return {e.process for e in entries if e.process}, {e.user for e in entries if e.user}


def learn(
    doc: ruleset.RulesetDocument | None, processes: Iterable[procfs.Process] | None = None
) -> Knowledge:
    """Cgroups for the document's process patterns and uids for its users, as the host is now."""
    wanted, users = constraints(doc)
    cgroups: dict[str, str] = {}
    if wanted:
        found = list(procfs.processes() if processes is None else processes)
        for pattern in sorted(wanted):
            groups = {p.cgroup for p in found if matches(p, pattern)}
            if len(groups) == 1:
                (group,) = groups
                if group and group.strip("/"):
                    cgroups[pattern] = group.strip("/")
    uids: dict[str, int] = {}
    for user in sorted(users):
        try:
            uids[user] = pwd.getpwnam(user).pw_uid
        except KeyError:
            continue
    return Knowledge(cgroups, uids)
