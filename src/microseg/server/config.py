"""Server settings: a dataclass with a docstring per field, from flags and `MICROSEG_*` variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from microseg import errors

HOOK_ACTIONS = ("quarantine", "release", "release-any")
"""What a webhook may be allowed: `quarantine`; `release` of a quarantine a hook set;
`release-any`, also of one a person (an API token) set."""


@dataclass(frozen=True)
class HookSecret:
    """One tool allowed to call the signed webhooks."""

    name: str
    secret: bytes
    actions: frozenset[str]
    """A subset of HOOK_ACTIONS (`release-any` includes `release`)."""


def parse_hook(item: str) -> HookSecret:
    """`NAME=SECRET` (may only quarantine) or `NAME:ACTION+ACTION=SECRET`."""
    head, _, secret = item.partition("=")
    name, scoped, scope = head.partition(":")
    actions = {a.strip() for a in scope.split("+")} if scoped else {"quarantine"}
    unknown = actions - set(HOOK_ACTIONS)
    if not name.strip() or not secret.strip() or unknown:
        why = f"unknown action {', '.join(sorted(unknown))}; " if unknown else ""
        raise errors.UserError(
            f"hook secret {name.strip() or '?'!r}: {why}write NAME=SECRET or NAME:ACTION+ACTION=SECRET "
            f"(actions: {', '.join(HOOK_ACTIONS)})"
        )
    if "release-any" in actions:
        actions.add("release")
    return HookSecret(name.strip(), secret.strip().encode(), frozenset(actions))


@dataclass(frozen=True)
class ServerSettings:
    """How one server process runs. Every replica of a deployment uses the same database."""

    database: str = ""
    """SQLAlchemy URL: `postgresql+psycopg://user@host/db` for scale-out; empty means SQLite in
    `data_dir` (MICROSEG_DATABASE)."""

    data_dir: str = "~/.local/share/microseg"
    """Where the default SQLite database lives (MICROSEG_DATA_DIR)."""

    host: str = "127.0.0.1"
    """Address to listen on."""

    port: int = 8440
    """Port to listen on."""

    control_plane: tuple[str, ...] = ()
    """`ADDRESS:PORT` endpoints agents reach this server on; every ruleset always allows them, so
    no policy can cut an agent off its control plane (MICROSEG_CONTROL_PLANE, comma separated).
    Empty: the listen address and port, unless that is a wildcard or loopback address."""

    tls_cert: str | None = None
    """PEM certificate for HTTPS (with `tls_key`)."""

    tls_key: str | None = None
    """PEM private key for HTTPS."""

    long_poll_max: float = 60.0
    """Longest time a ruleset long-poll is held open, in seconds."""

    watch_interval: float = 0.2
    """How often the state row is read to notice changes made by other replicas, in seconds."""

    offline_after: float = 90.0
    """An agent silent for this long is marked offline (with an event), in seconds."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Requests with a larger body get 413."""

    enroll_per_minute: int = 30
    """Enrollment attempts allowed per client address per minute (per process)."""

    max_flow_batch: int = 5000
    """Most flow records one batch may carry."""

    flow_retention_days: float = 30.0
    """Days flow summaries and raw flow batches are kept (older ones are dropped hourly)."""

    flow_clock_skew: float = 300.0
    """Seconds a flow record's times may lie ahead of the server's clock (agents' clocks drift);
    a later record refuses its batch, since a far-future flow would never expire."""

    flow_uploads_per_minute: int = 60
    """Flow batches one agent may upload per minute; more get 429 with Retry-After. Counted per
    server process: behind a load balancer an agent may get this much from each replica."""

    agent_reports_per_minute: int = 120
    """Heartbeats, and separately status reports, one agent may send per minute (an agent sends
    one every 30 s and on changes); more get 429 with Retry-After, so a stolen credential cannot
    fill the event table through tamper or expiry reports. Counted per server process."""

    event_retention_days: float = 90.0
    """Days events are kept (older ones are dropped hourly, with the flows past their retention)."""

    hook_secrets: tuple[str, ...] = ()
    """`NAME=SECRET` or `NAME:ACTION+ACTION=SECRET` per tool allowed to call the signed webhooks
    (`/api/v1/hooks/*`): the tool sends `X-Microseg-Hook: NAME` and signs with SECRET
    (MICROSEG_HOOK_SECRETS, comma separated). ACTIONs (`HOOK_ACTIONS`) scope what the tool may do;
    without any it may only quarantine. Empty: the webhooks answer 404."""

    streams: tuple[str, ...] = ()
    """SIEM sinks as URLs (`syslog+udp|tcp|tls://host:port`, `https://...`, `file:///path`; see
    docs/siem.md) that events, audit records and blocked flows are streamed to (`--stream`,
    MICROSEG_STREAMS separated by spaces or newlines)."""

    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of reverse proxies whose `X-Forwarded-For`/`-Proto` headers are believed
    (`--trusted-proxy`, MICROSEG_TRUSTED_PROXIES comma separated). Empty: nobody's, so a client
    cannot pick the address that rate limits and logs see."""

    extra: dict[str, str] = field(default_factory=dict)
    """Reserved for settings later issues add."""

    def __post_init__(self) -> None:
        self.hooks()  # a malformed hook setting stops the start-up, not the first call

    def hooks(self) -> dict[str, HookSecret]:
        """Hook name -> its secret and scope, from `hook_secrets`."""
        found = [parse_hook(item) for item in self.hook_secrets]
        return {h.name: h for h in found}

    @staticmethod
    def from_env(
        env: dict[str, str] | None = None, overrides: dict[str, object] | None = None
    ) -> ServerSettings:
        """Settings from `MICROSEG_*` variables, then explicit overrides (flags win)."""
        env = dict(os.environ) if env is None else env
        found: dict[str, object] = {}
        if env.get("MICROSEG_DATABASE"):
            found["database"] = env["MICROSEG_DATABASE"]
        if env.get("MICROSEG_DATA_DIR"):
            found["data_dir"] = env["MICROSEG_DATA_DIR"]
        if env.get("MICROSEG_CONTROL_PLANE"):
            found["control_plane"] = tuple(
                p.strip() for p in env["MICROSEG_CONTROL_PLANE"].split(",") if p.strip()
            )
        if env.get("MICROSEG_HOOK_SECRETS"):
            found["hook_secrets"] = tuple(
                p.strip() for p in env["MICROSEG_HOOK_SECRETS"].split(",") if p.strip()
            )
        if env.get("MICROSEG_TRUSTED_PROXIES"):
            found["trusted_proxies"] = tuple(
                p.strip() for p in env["MICROSEG_TRUSTED_PROXIES"].split(",") if p.strip()
            )
        for name, kind in _NUMBERS.items():
            if env.get(f"MICROSEG_{name.upper()}"):
                found[name] = kind(env[f"MICROSEG_{name.upper()}"])
        if env.get("MICROSEG_STREAMS"):
            found["streams"] = tuple(env["MICROSEG_STREAMS"].split())
        found.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return ServerSettings(**found)  # type: ignore[arg-type]

    def own_endpoints(self) -> tuple[str, ...]:
        """The control-plane endpoints every ruleset keeps open."""
        if self.control_plane:
            return self.control_plane
        if self.host in ("0.0.0.0", "::", "") or self.host.startswith("127.") or self.host == "::1":
            return ()
        return (f"{self.host}:{self.port}",)


_NUMBERS: dict[str, type[int] | type[float]] = {
    "flow_clock_skew": float,
    "flow_uploads_per_minute": int,
    "event_retention_days": float,
    "agent_reports_per_minute": int,
    "enroll_per_minute": int,
}
"""Numeric settings read from `MICROSEG_<NAME>` (e.g. MICROSEG_FLOW_UPLOADS_PER_MINUTE)."""
