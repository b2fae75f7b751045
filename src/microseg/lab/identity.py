"""Giving a freshly forked lab process its place: cgroup, network namespace, name, session.

Used by the service launcher and the traffic generator right after fork(), while the child is
single-threaded: join the cgroup first (a socket belongs to the cgroup of the process that created
it, so this must happen before any socket exists), then enter the host's namespace (setns, which
keeps /sys and cgroup paths, unlike `ip netns exec`), then take the program's name, so that
/proc/PID/comm reads `mysqld` and process-aware rules and flow records see what a real host shows.
"""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

from microseg.agent import netns

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Place:
    """Where a lab process lives: its host's namespace, its cgroup's procs file, its name."""

    netns: str
    cgroup_procs: str
    name: str

    def to_dict(self) -> dict[str, str]:
        """JSON form, for launch specs."""
        return {"netns": self.netns, "cgroupProcs": self.cgroup_procs, "name": self.name}

    @staticmethod
    def of(data: dict[str, str]) -> Place:
        """From `to_dict`'s form."""
        return Place(data["netns"], data["cgroupProcs"], data["name"])


def set_name(name: str) -> None:
    """The calling thread's name, which for a single-threaded process is /proc/PID/comm."""
    if _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Get `sig` when the parent exits, so a generator's clients never outlive it."""
    if _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def become(place: Place) -> None:
    """Join the cgroup, enter the namespace and take the name (in this order; see the module doc)."""
    with open(place.cgroup_procs, "w", encoding="ascii") as procs:
        procs.write(str(os.getpid()))
    netns.enter(place.netns)
    set_name(place.name)
