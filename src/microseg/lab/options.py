"""How a lab runs (`LabOptions`) and what everything it makes is called (`LabNames`).

Fed by the CLI (`microseg lab up --port ...`) or by tests; read by the runner and by `down`, which
finds a lab's leftovers by these names alone when the state file is gone. Every name starts with
the lab's prefix, and the prefix starts with `ms-`, so the lab can never touch anything it did not
make, nor another lab's or another person's `ms-` namespaces.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from microseg import errors

MODES = ("visibility", "alert", "enforce")
MARKER = "MICROSEG_LAB"
"""Environment variable every lab process carries (value: the lab's prefix), so `down` finds them
after a crash even when they left the lab's namespaces and cgroups."""
HOST_VARIABLE = "MICROSEG_LAB_HOST"
"""The lab host a process belongs to, for processes started for one host."""
INNER_INTERFACE = "ms-eth0"
"""A host's end of its veth, inside its own namespace (so every host may use the same name)."""

_PREFIX = re.compile(r"^ms-[a-z0-9]{1,7}$")


@dataclass(frozen=True)
class LabNames:
    """The names of a lab's namespaces, links, cgroup and marker, all derived from its prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise errors.UserError(
                f"lab prefix {self.prefix!r}: 'ms-' and 1-7 lowercase letters or digits "
                "(interface names built from it must fit 15 characters)"
            )

    @property
    def bridge(self) -> str:
        """The bridge in the root namespace."""
        return f"{self.prefix}0"

    def netns(self, host: str) -> str:
        """A host's network namespace."""
        return f"{self.prefix}-{host}"

    def veth(self, index: int) -> str:
        """The root-namespace end of host number `index`'s veth (on the bridge)."""
        return f"{self.prefix}-h{index}"

    def owns_netns(self, name: str) -> bool:
        """Whether a namespace name is one of this lab's."""
        return name.startswith(f"{self.prefix}-")

    def owns_link(self, name: str) -> bool:
        """Whether a root-namespace link name is one of this lab's."""
        return name == self.bridge or name.startswith(f"{self.prefix}-")


@dataclass(frozen=True)
class LabOptions:
    """How `up` runs a lab; `down` and `status` need only `state_dir` and `prefix`."""

    state_dir: str = "/run/microseg-lab"
    """Where the lab keeps its state file, logs, the server's database and the agents' state
    (MICROSEG_LAB_STATE_DIR). `down` deletes it."""

    prefix: str = "ms-lab"
    """What every name starts with: namespaces `<prefix>-<host>`, bridge `<prefix>0`, veths
    `<prefix>-h<N>`, the cgroup `<cgroup2>/<prefix>` (MICROSEG_LAB_PREFIX)."""

    port: int = 8440
    """Port of the control plane on the bridge's address 10.77.0.1 (MICROSEG_LAB_PORT)."""

    mode: str = "visibility"
    """Enforcement mode of the lab's workloads and enrollment tokens: visibility, alert, enforce."""

    agents: bool = True
    """Start one `microseg agent` per host."""

    traffic: bool = True
    """Start the traffic generator (the topology's normal flows)."""

    traffic_lifetime: float = 3600.0
    """Seconds after which the traffic generator stops by itself."""

    policy: tuple[str, ...] = ()
    """Policy files or directories to apply and provision; empty: the lab policy shipped with microseg."""

    python: str = field(default_factory=lambda: sys.executable)
    """The interpreter that runs microseg's own processes (server, agents, services, traffic)."""

    startup_timeout: float = 30.0
    """Seconds to wait for the server and the services to come up."""

    hook_secrets: tuple[str, ...] = ()
    """`NAME[:ACTION+ACTION]=SECRET` of each tool allowed to call the control plane's signed webhooks
    (the demo's EDR); handed to the server in its environment, not its command line, which every
    user can read."""

    @property
    def names(self) -> LabNames:
        """Names derived from the prefix (checked)."""
        return LabNames(self.prefix)

    @property
    def state_file(self) -> Path:
        """The state file: what `up` made, with pids, names and the admin token."""
        return Path(self.state_dir) / "state.json"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise errors.UserError(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        if not 1 <= self.port <= 65535:
            raise errors.UserError(f"port {self.port} is not between 1 and 65535")
        if self.traffic_lifetime <= 0:
            raise errors.UserError("the traffic generator's lifetime must be above 0 seconds")

    @staticmethod
    def from_env(env: dict[str, str] | None = None, **overrides: Any) -> LabOptions:
        """Defaults, then MICROSEG_LAB_STATE_DIR / _PREFIX / _PORT, then `overrides` that are not None."""
        env = dict(os.environ) if env is None else env
        found: dict[str, Any] = {}
        if "MICROSEG_LAB_STATE_DIR" in env:
            found["state_dir"] = env["MICROSEG_LAB_STATE_DIR"]
        if "MICROSEG_LAB_PREFIX" in env:
            found["prefix"] = env["MICROSEG_LAB_PREFIX"]
        if "MICROSEG_LAB_PORT" in env:
            try:
                found["port"] = int(env["MICROSEG_LAB_PORT"])
            except ValueError as exc:
                raise errors.UserError(f"MICROSEG_LAB_PORT={env['MICROSEG_LAB_PORT']!r}: not a port") from exc
        known = {f.name for f in fields(LabOptions)}
        found.update({k: v for k, v in overrides.items() if k in known and v is not None})
        return replace(LabOptions(), **found)
