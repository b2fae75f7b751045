"""Settings shared by the engine and the renderers, as dataclasses with a docstring per field.

Loaded from environment variables (`MICROSEG_*`); later issues add files and server settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RenderSettings:
    """How rulesets become nftables / iptables text."""

    table: str = "microseg"
    """Name of the one nftables table (family inet) the agent owns; nothing else is touched."""

    log_group: int = 7
    """NFLOG group for alert-mode would-block and enforce-mode denied new connections."""

    log_rate_per_second: int = 0
    """When above 0, log statements are rate limited (a `limit rate` guard); 0 logs every new flow."""

    chain_priority: int = 0
    """Priority of the input/output base chains (0 = `filter`)."""

    ipset_prefix: str = "ms"
    """Prefix of ipset and iptables chain names in the iptables fallback."""

    cgroup2_mount: str = ""
    """Where the cgroup2 hierarchy is mounted, relative to /sys/fs/cgroup ("" when it is mounted
    there, "unified" on hybrid hosts). nft resolves `socket cgroupv2` paths under /sys/fs/cgroup,
    while the level counts from the hierarchy's root, so both are needed."""


@dataclass(frozen=True)
class Settings:
    """Top-level settings."""

    render: RenderSettings = field(default_factory=RenderSettings)
    """Rendering of rulesets to the data plane."""

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> Settings:
        """Read `MICROSEG_LOG_GROUP`, `MICROSEG_TABLE` and friends from the environment."""
        env = dict(os.environ) if env is None else env
        render = RenderSettings(
            table=env.get("MICROSEG_TABLE", "microseg"),
            log_group=int(env.get("MICROSEG_LOG_GROUP", "7")),
            log_rate_per_second=int(env.get("MICROSEG_LOG_RATE", "0")),
        )
        return Settings(render=render)
