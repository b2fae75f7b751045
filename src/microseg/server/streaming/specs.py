"""Sink URLs (`--stream` / MICROSEG_STREAMS) parsed into specs, with every mistake reported at
start-up, naming the setting and the URL.

Fed by the server settings; feeds `sinks.open` and the streamer. What it deliberately does not do:
open connections (a sink that is down at start-up is retried, not refused).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib import parse

from microseg import errors
from microseg.store import streams

SETTING = "--stream / MICROSEG_STREAMS"
TRANSPORTS = {"syslog+udp": 514, "syslog+tcp": 601, "syslog+tls": 6514, "http": 80, "https": 443, "file": 0}
"""URL schemes and their default ports."""
FORMATS = ("rfc5424", "cef", "json")
DEFAULT_FLOWS = frozenset({"blocked", "would-block"})
FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    "audit": 13,
    **{f"local{n}": 16 + n for n in range(8)},
}

COMMON = {"name", "what", "flows", "bound", "start", "backoff", "backoff_max"}
OWN = {
    "syslog": COMMON | {"format", "facility", "max", "ca", "cert", "key"},
    "webhook": COMMON | {"secret_env", "ca"},
    "file": COMMON | {"format"},
}
"""Query parameters each kind of sink understands; a webhook passes any others on to its receiver."""


@dataclass(frozen=True)
class SinkSpec:
    """One configured sink."""

    name: str
    """The cursor's key: `name=`, else the URL without query and credentials."""
    kind: str
    """`syslog`, `webhook` or `file`."""
    transport: str
    """The URL scheme."""
    host: str
    port: int
    path: str
    """The file of a `file:` sink."""
    target: str
    """A webhook's URL as it is posted to (with the receiver's own query parameters)."""
    format: str
    what: tuple[str, ...]
    verdicts: frozenset[str] | None
    """Flow verdicts sent (None: all)."""
    bound: int
    """Most items a sink may fall behind per source before the oldest are skipped."""
    start: str
    """Where a new sink begins: `oldest` (what is stored, within the bound) or `now`."""
    backoff: float
    backoff_max: float
    facility: int = 16
    max_bytes: int = 2048
    """Longest UDP datagram (longer messages are shortened)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    secret: bytes | None = None
    """The webhook's HMAC key (from the variable `secret_env` names)."""


def parse_all(urls: tuple[str, ...], env: Mapping[str, str] | None = None) -> list[SinkSpec]:
    """Every sink, or a UserError naming the setting, the URL and what is wrong."""
    found = [parse_one(url, os.environ if env is None else env) for url in urls]
    names = [spec.name for spec in found]
    for name in names:
        if names.count(name) > 1:
            raise errors.UserError(f"{SETTING}: two sinks are named {name!r}; give one a name=")
    return found


def parse_one(url: str, env: Mapping[str, str]) -> SinkSpec:
    """One sink URL as a spec."""
    try:
        return _parse(url, env)
    except ValueError as exc:
        raise errors.UserError(f"{SETTING}: {_redacted(url)!r}: {exc}") from None


def _parse(url: str, env: Mapping[str, str]) -> SinkSpec:
    parts = parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in TRANSPORTS:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(TRANSPORTS)})")
    kind = "syslog" if scheme.startswith("syslog") else "file" if scheme == "file" else "webhook"
    params = _params(parts.query)
    unknown = sorted(set(params) - OWN[kind])
    if unknown and kind != "webhook":
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(OWN[kind]))})")
    host, port = _address(parts, scheme, kind)
    fmt = params.get("format", "json" if kind != "syslog" else "rfc5424")
    allowed = ("rfc5424", "cef") if kind == "syslog" else ("json",) if kind == "webhook" else FORMATS
    if fmt not in allowed:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(allowed)}")
    passed_on = parse.urlencode([(k, v) for k, v in parse.parse_qsl(parts.query) if k not in OWN["webhook"]])
    target = parse.urlunsplit((scheme, parts.netloc, parts.path or "/", passed_on, ""))
    backoff = _number(params, "backoff", 0.5)
    return SinkSpec(
        name=_name(params) or _default_name(parts, scheme, host, port),
        kind=kind,
        transport=scheme,
        host=host,
        port=port,
        path=parse.unquote(parts.path),
        target=target,
        format=fmt,
        what=_what(params),
        verdicts=_verdicts(params),
        bound=int(_number(params, "bound", 100_000)),
        start=_choice(params, "start", ("oldest", "now")),
        backoff=backoff,
        backoff_max=max(backoff, _number(params, "backoff_max", 60.0)),
        facility=_facility(params),
        max_bytes=int(_number(params, "max", 2048, low=480, high=65_000)),
        ca=_file(params, "ca"),
        cert=_file(params, "cert"),
        key=_file(params, "key"),
        secret=_secret(params, env),
    )


def _params(query: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in parse.parse_qsl(query, keep_blank_values=True):
        if key in found:
            raise ValueError(f"parameter {key!r} is given twice")
        found[key] = value
    return found


def _address(parts: parse.SplitResult, scheme: str, kind: str) -> tuple[str, int]:
    if kind == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a file sink is file:///absolute/path")
        return "", 0
    if not parts.hostname:
        raise ValueError("no host")
    return parts.hostname, parts.port or TRANSPORTS[scheme]


def _what(params: dict[str, str]) -> tuple[str, ...]:
    chosen = [w.strip() for w in params.get("what", ",".join(streams.SOURCES)).split(",") if w.strip()]
    bad = [w for w in chosen if w not in streams.SOURCES]
    if bad or not chosen:
        raise ValueError(
            f"what= takes {', '.join(streams.SOURCES)} (comma separated), not {params['what']!r}"
        )
    return tuple(w for w in streams.SOURCES if w in chosen)


def _verdicts(params: dict[str, str]) -> frozenset[str] | None:
    text = params.get("flows")
    if text is None:
        return DEFAULT_FLOWS
    if text == "all":
        return None
    chosen = frozenset(v.strip() for v in text.split(",") if v.strip())
    if not chosen or chosen - set(streams.VERDICTS):
        raise ValueError(f"flows= takes all or {', '.join(streams.VERDICTS)} (comma separated), not {text!r}")
    return chosen


def _number(params: dict[str, str], key: str, default: float, low: float = 0.0, high: float = 1e9) -> float:
    text = params.get(key)
    try:
        value = default if text is None else float(text)
    except ValueError:
        raise ValueError(f"{key}= is not a number: {text!r}") from None
    if not low <= value <= high or (key == "bound" and value < 1):
        raise ValueError(f"{key}= is out of range: {text!r}")
    return value


def _choice(params: dict[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = params.get(key, choices[0])
    if value not in choices:
        raise ValueError(f"{key}= is one of {', '.join(choices)}, not {value!r}")
    return value


def _facility(params: dict[str, str]) -> int:
    text = params.get("facility", "local0")
    if text.isdigit() and int(text) < 24:
        return int(text)
    if text not in FACILITIES:
        raise ValueError(f"facility= is 0-23 or one of {', '.join(FACILITIES)}, not {text!r}")
    return FACILITIES[text]


def _file(params: dict[str, str], key: str) -> str | None:
    path = params.get(key)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"{key}= file not found: {path!r}")
    return path


def _secret(params: dict[str, str], env: Mapping[str, str]) -> bytes | None:
    name = params.get("secret_env")
    if name is None:
        return None
    if not env.get(name):
        raise ValueError(f"secret_env={name}: the variable {name} is not set")
    return env[name].encode()


def _name(params: dict[str, str]) -> str | None:
    name = params.get("name")
    if name is not None and not 0 < len(name) <= 200:
        raise ValueError("name= is 1 to 200 characters")
    return name


def _default_name(parts: parse.SplitResult, scheme: str, host: str, port: int) -> str:
    name = f"file://{parts.path}" if scheme == "file" else f"{scheme}://{host}:{port}{parts.path}"
    if len(name) > 200:
        raise ValueError("the URL is too long to name its cursor; add name=")
    return name


def _redacted(url: str) -> str:
    """The URL without a password, for error messages and logs."""
    parts = parse.urlsplit(url)
    if parts.password is None:
        return url
    return parse.urlunsplit(
        parts._replace(
            netloc=f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        )
    )
