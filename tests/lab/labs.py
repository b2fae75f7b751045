"""Helpers for the lab's own tests: a fresh prefix and state directory per lab, the real CLI, and a
check for leftovers that does not use the lab's code (ip, /run/netns, /proc and the cgroup tree as
they are), so that `down` is judged by something other than itself.

Every lab made here gets a prefix of its own (`ms-t` + 4 hex digits), so the tests never touch the
default `ms-lab` or anyone else's `ms-` namespaces, and a failed test cannot confuse the next one.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main

from microseg.cli import main
from microseg.lab import options
from tests.conftest import require, require_root

TINY = """\
hosts:
  - name: app
    labels: {env: prod, app: crm, role: app}
    services: [{port: 22, process: sshd}]
    talksTo:
      - {to: "role=db", port: 3306, client: java, rate: 5}
      - {to: "role=db", port: 53, protocol: udp, client: java, rate: 5}
  - name: db
    labels: {env: prod, app: crm, role: db}
    services:
      - {port: 3306, process: mysqld}
      - {port: 53, protocol: udp, process: named}
"""
"""Two hosts, TCP and UDP: small enough that making it is quick."""


def require_lab() -> None:
    """Skip (fail under CI=true) unless this machine can run a lab."""
    require_root("the lab needs root")
    for tool in ("ip", "nsenter", "setsid", "sysctl"):
        require(shutil.which(tool) is not None, f"the lab needs {tool}")
    require("cgroup2" in Path("/proc/self/mountinfo").read_text(), "the lab needs a cgroup2 mount")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_options(tmp: Path, **more: Any) -> options.LabOptions:
    """Options for a lab of its own: fresh prefix, state directory and port."""
    base = options.LabOptions(
        state_dir=str(tmp / "state"), prefix=f"ms-t{secrets.token_hex(2)}", port=free_port()
    )
    return dataclasses.replace(base, **more)


def command(*args: str) -> list[str]:
    """The argv of `microseg lab ARGS` (through `microseg.cli.lab` until the main CLI has `lab`)."""
    group = typer.main.get_command(main.app)
    registered = "lab" in getattr(group, "commands", {})
    entry = ["-m", "microseg", "lab"] if registered else ["-m", "microseg.cli.lab"]
    return [sys.executable, *entry, *args]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`microseg lab ARGS` as a separate process."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def where(opts: options.LabOptions) -> list[str]:
    """The CLI options naming this lab."""
    return ["--state-dir", opts.state_dir, "--prefix", opts.prefix]


def _cgroup2_mount() -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.startswith("cgroup2 "):
            return before.split(" ")[4]
    raise AssertionError("no cgroup2 mount")


def _running(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def leftovers(opts: options.LabOptions) -> list[str]:
    """Everything of the lab that still exists: namespaces, links, processes, cgroup, state dir."""
    prefix = opts.prefix
    found = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line.split()[0]}" for line in listed.splitlines() if line.startswith(f"{prefix}-")]
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    for line in shown.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name == f"{prefix}0" or name.startswith(f"{prefix}-"):
            found.append(f"link {name}")
    marker = f"{options.MARKER}={prefix}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and _running(pid):
            found.append(f"process {pid} {Path(f'/proc/{pid}/comm').read_text().strip()}")
    if Path(_cgroup2_mount(), prefix).exists():
        found.append(f"cgroup {prefix}")
    if Path(opts.state_dir).exists():
        found.append(f"state {opts.state_dir}")
    return found


def cgroup_pids(opts: options.LabOptions, *parts: str) -> list[int]:
    """The processes in one of the lab's cgroups."""
    procs = Path(_cgroup2_mount(), opts.prefix, *parts, "cgroup.procs")
    return [int(p) for p in procs.read_text().split()]
