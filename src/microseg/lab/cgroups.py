"""The lab's cgroup v2 subtree: `<cgroup2 mount>/<prefix>/<host>/<process>`, one leaf per program.

Fed by the runner (which leaf each process goes to); feeds the agents indirectly: a service's
cgroup is what `socket cgroupv2` rules match, and /proc/PID/cgroup shows it as `/<prefix>/<host>/
<process>` relative to the hierarchy's root. The mount is found in /proc/self/mountinfo (on hybrid
hosts cgroup2 sits at /sys/fs/cgroup/unified). `kill` uses cgroup.kill, which reaches every
process of the subtree even when nothing else remembers it, and `remove` deletes the directories
leaves first. Processes live only in leaves, so no controller rule ("no internal processes") bites.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from microseg import errors

MOUNTINFO = Path("/proc/self/mountinfo")


def mount(mountinfo: Path = MOUNTINFO) -> tuple[str, str]:
    """(mount point, root inside the hierarchy) of the cgroup2 hierarchy; the first one listed."""
    for line in mountinfo.read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            parts = before.split(" ")
            return parts[4], parts[3]
    raise errors.UserError("no cgroup2 hierarchy is mounted (see /proc/self/mountinfo); the lab needs one")


@dataclass(frozen=True)
class CgroupTree:
    """One lab's subtree: `mount/base`, with `root` the mount's own place in the hierarchy."""

    mount: str
    root: str
    base: str

    @staticmethod
    def find(base: str) -> CgroupTree:
        """The subtree named `base` under the cgroup2 mount of this machine."""
        point, root = mount()
        return CgroupTree(point, root, base)

    def path(self, *parts: str) -> Path:
        """The directory of a cgroup of the lab."""
        return Path(self.mount, self.base, *parts)

    def relative(self, *parts: str) -> str:
        """The cgroup as /proc/PID/cgroup names it (from the hierarchy's root)."""
        return "/" + "/".join(p.strip("/") for p in (self.root, self.base, *parts) if p.strip("/"))

    def make(self, *parts: str) -> Path:
        """Create a cgroup (and its parents); its `cgroup.procs` file, for processes to join."""
        directory = self.path(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / "cgroup.procs"

    def exists(self) -> bool:
        """Whether the lab's subtree is there."""
        return self.path().is_dir()

    def pids(self) -> set[int]:
        """Every process in the subtree."""
        found: set[int] = set()
        for directory, _, _ in os.walk(self.path()):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL every process in the subtree at once (cgroup.kill, Linux 5.14+)."""
        control = self.path("cgroup.kill")
        if control.exists():
            with contextlib.suppress(OSError):
                control.write_text("1")

    def remove(self, timeout: float = 5.0) -> None:
        """Delete the subtree, leaves first; waits while dying processes still hold a leaf."""
        deadline = time.monotonic() + timeout
        while self.exists():
            busy = self._remove_once()
            if busy is None:
                return
            if time.monotonic() > deadline:
                raise errors.TransientError(f"cannot remove cgroup {busy}: processes are still in it")
            time.sleep(0.05)

    def _remove_once(self) -> Path | None:
        """One bottom-up pass; the first directory that could not go, or None when all went."""
        busy = None
        for directory, _, _ in sorted(os.walk(self.path()), key=lambda w: -len(Path(w[0]).parts)):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                busy = busy or Path(directory)
        return busy
