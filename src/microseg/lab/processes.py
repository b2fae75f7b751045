"""Starting the lab's background processes detached, and finding and stopping them again.

`spawn` starts a command so that `up` can return: a throw-away `sh` puts it in the background and
prints its pid, `setsid` gives it a session of its own, and it writes its own pid into its cgroup
before it execs the command (optionally through `nsenter --net`, i.e. setns), so nothing it does
ever happens outside its cgroup. The caller never becomes its parent (no zombies, no Popen left
running) and nothing it starts shares the caller's terminal.

`lab_processes` finds a lab's processes without trusting any record: those carrying the lab's
marker in their environment and those whose network namespace is one of the lab's. `stop` sends
SIGTERM, waits, then SIGKILL. The caller and its ancestors are never candidates.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from microseg import errors

_OUTER = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'
_INNER = 'echo $$ > "$0" || exit 125; exec "$@"'
"""`$0` is the cgroup's procs file, `$@` the command. Exit 125 if the cgroup cannot be joined."""


def spawn(
    command: list[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cgroup_procs: Path,
    netns: str | None = None,
) -> int:
    """Start `command` detached, in the cgroup whose procs file is given, in `netns` if any; its pid."""
    inner = ["sh", "-c", _INNER, str(cgroup_procs)]
    if netns is not None:
        inner += ["nsenter", f"--net={netns}", "--"]
    try:
        done = subprocess.run(
            ["sh", "-c", _OUTER, "sh", str(log), *inner, *command],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.PermanentError(f"cannot start {command[0]}: {exc}") from exc
    return int(done.stdout.strip())


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count: it holds nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _ancestors() -> set[int]:
    """This process and its parents up to init: never stopped, whatever they carry."""
    found = {0, 1}
    pid = os.getpid()
    while pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])
        except (OSError, ValueError, IndexError):
            break
    return found


def carries_marker(pid: int, variable: str, value: str) -> bool:
    """Whether the process was started with `variable=value` in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{variable}={value}".encode() in environ.split(b"\0")


def netns_inode(pid: int) -> int | None:
    """The network namespace of a process (its main thread's), None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def lab_processes(variable: str, value: str, netns: set[int], also: Iterable[int] = ()) -> set[int]:
    """Running processes with the marker, or inside one of the `netns` inodes, plus `also` (pids known
    from elsewhere, e.g. the lab's cgroup), less the caller and its ancestors."""
    keep = _ancestors()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        pid = int(entry)
        if carries_marker(pid, variable, value) or netns_inode(pid) in netns:
            found.add(pid)
    return {pid for pid in (found | set(also)) if pid not in keep and alive(pid)}


def stop(pids: Iterable[int], grace: float = 3.0) -> set[int]:
    """SIGTERM, then SIGKILL for what still runs after `grace` seconds; the pids that survive both."""
    pending = {pid for pid in pids if alive(pid)}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = {pid for pid in pending if alive(pid)}
        if not pending:
            break
    return pending
