"""Entering network namespaces the setns(2) way, which keeps /sys (and so cgroup paths) intact.

`ip netns exec` remounts /sys for the namespace, which hides the host's cgroup tree from nft and
breaks `socket cgroupv2` matches; setns only switches the network namespace of one thread. Python
3.11 has no `os.setns`, hence libc through ctypes.

`enter` moves the calling thread (call it before starting other threads: new threads inherit the
namespace of the thread that starts them). `run_in` runs a function in a short-lived thread inside
the namespace, so the caller never leaves its own; sockets made there stay in that namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from microseg import errors

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def path_of(netns: str) -> str:
    """`/run/netns/NAME` for a name made by `ip netns add`; a path (e.g. /proc/PID/ns/net) as is."""
    return netns if "/" in netns else f"/run/netns/{netns}"


def enter(netns: str) -> None:
    """Move the calling thread into `netns`."""
    path = path_of(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.MicrosegError(f"network namespace {netns}: {exc.strerror}") from exc
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise errors.MicrosegError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(netns: str | None, fn: Callable[[], T]) -> T:
    """`fn()` evaluated in `netns` (in the caller's namespace when None)."""
    if netns is None:
        return fn()
    box: dict[str, object] = {}

    def body() -> None:
        try:
            enter(netns)
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns:{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def inode(pid: int | str = "self") -> int:
    """The identity of a process's network namespace (the inode of /proc/PID/ns/net)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def current_thread_inode() -> int:
    """The network namespace of the calling thread (threads may differ from their process)."""
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
