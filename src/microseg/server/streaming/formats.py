"""Items as text for a SIEM: RFC 5424 syslog (structured data `microseg@32473`), CEF, JSON.

Fed by `items.Item`; feeds the sinks. Pure functions: no sockets, no clocks (the time printed is
the item's). Escaping follows each standard: RFC 5424 SD-PARAM values escape `"`, `\\` and `]`;
CEF escapes `|` and `\\` in the header and `=` and `\\` (and line breaks) in the extension.

What it deliberately does not do: framing (octet counting is the TCP transport's) or transport.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from microseg import __version__
from microseg.server.streaming import items

SD_ID = "microseg@32473"
"""The SD-ID: 32473 is the private enterprise number RFC 5612 reserves for documentation."""
SEVERITIES = {
    "tamper": (2, 9),
    "invariant-violation": (3, 8),
    "agent-failed": (3, 7),
    "flow-forged": (3, 7),
    "enroll-refused": (4, 7),
    "address-refused": (4, 7),
    "override-invariants": (4, 7),
    "dropped": (4, 6),
    "quarantine": (4, 6),
    "enroll-adopted": (5, 4),
    "labels-changed": (5, 4),
    "blocked": (4, 5),
    "agent-offline": (4, 5),
    "release": (5, 4),
    "would-block": (5, 3),
    "allowed": (6, 1),
}
"""Kind -> (syslog severity 0-7, lower is worse; CEF severity 0-10, higher is worse)."""
AUDIT_SEVERITY = (5, 3)
"""Any other change: syslog notice, CEF low."""
OTHER_SEVERITY = (6, 2)
CEF_TEXT_MAX = 4000
"""CEF consumers cut custom strings at 4,000 characters; we cut first, at a character."""


def severity(item: items.Item) -> tuple[int, int]:
    """(syslog, CEF) severity of an item."""
    default = AUDIT_SEVERITY if item.source == "audit" else OTHER_SEVERITY
    return SEVERITIES.get(item.kind, default)


def timestamp(at: float) -> str:
    """RFC 3339 in UTC with microseconds, as RFC 5424 allows."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- JSON -----------------------------------------------------------------------------------------


def document(item: items.Item) -> dict[str, Any]:
    """The JSON form (webhooks, JSON-lines files)."""
    return {
        "id": item.uid,
        "source": item.source,
        "seq": item.number,
        "at": timestamp(item.at),
        "time": item.at,
        "kind": item.kind,
        "severity": severity(item)[1],
        "workload": item.workload,
        "message": item.message,
        **item.fields,
        "details": item.details,
    }


def json_line(item: items.Item) -> bytes:
    """One JSON document on one line."""
    return json.dumps(document(item), separators=(",", ":"), sort_keys=False).encode() + b"\n"


# -- RFC 5424 -------------------------------------------------------------------------------------


def rfc5424(
    item: items.Item, *, host: str, facility: int = 16, msg: str | None = None, max_bytes: int | None = None
) -> bytes:
    """One syslog message (no framing). `msg` replaces the item's message and drops the structured
    data (CEF is carried this way); past `max_bytes` the message is shortened at a character,
    then the structured data to its identifying part."""
    pri = facility * 8 + severity(item)[0]
    header = f"<{pri}>1 {timestamp(item.at)} {_printable(host, 255)} microseg - {_printable(item.kind, 32)}"
    if msg is not None:
        return _fit(header, ["-"], msg, max_bytes)
    return _fit(header, [structured_data(item), structured_data(item, brief=True)], item.message, max_bytes)


def structured_data(item: items.Item, *, brief: bool = False) -> str:
    """The one SD-ELEMENT; `brief`: only what identifies the item."""
    params: list[tuple[str, str]] = [("id", item.uid), ("source", item.source), ("kind", item.kind)]
    if brief:
        params.append(("truncated", "true"))
    else:
        params += [("workload", item.workload)] if item.workload else []
        params += [(k, _text(v)) for k, v in item.fields.items() if v is not None]
        params += [("details", json.dumps(item.details, separators=(",", ":")))] if item.details else []
    return "[" + SD_ID + "".join(f' {_printable(k, 32)}="{sd_escape(v)}"' for k, v in params) + "]"


def sd_escape(value: str) -> str:
    """An SD-PARAM value: `"`, `\\` and `]` escaped with a backslash (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _fit(header: str, sds: list[str], msg: str, max_bytes: int | None) -> bytes:
    for sd in sds:
        start = f"{header} {sd} ".encode()
        if max_bytes is None or len(start) <= max_bytes:
            return start + _cut(msg.encode(), None if max_bytes is None else max_bytes - len(start))
    return _cut(start, max_bytes)


def _cut(data: bytes, limit: int | None) -> bytes:
    """At most `limit` bytes, never half a UTF-8 character."""
    if limit is None or len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


def _printable(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or `-` (the NILVALUE)."""
    clean = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return clean or "-"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- CEF ------------------------------------------------------------------------------------------


def cef(item: items.Item) -> str:
    """One CEF:0 line: `CEF:0|microseg|microseg|VERSION|SIGNATURE|NAME|SEVERITY|extension`."""
    head = [
        "microseg",
        "microseg",
        __version__,
        f"{item.source}:{item.kind}",
        item.message[:512],
        str(severity(item)[1]),
    ]
    extension = " ".join(f"{k}={cef_value(v)}" for k, v in cef_extension(item))
    return "CEF:0|" + "|".join(cef_header(h) for h in head) + "|" + extension


def cef_header(value: str) -> str:
    """A header field: `\\` and `|` escaped; a header cannot hold a line break."""
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def cef_value(value: str) -> str:
    """An extension value: `\\` and `=` escaped, line breaks as `\\n` and `\\r`."""
    return (
        value.replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def cef_extension(item: items.Item) -> list[tuple[str, str]]:
    """The extension's key/value pairs, in CEF's own dictionary where it has a key."""
    pairs = [
        ("rt", str(int(item.at * 1000))),
        ("externalId", item.uid),
        ("cat", item.source),
        ("act", item.kind),
    ]
    if item.workload:
        pairs += [("cs2Label", "workload"), ("cs2", item.workload)]
    f = item.fields
    if item.source == "audit":
        pairs += [("suser", f["actor"]), ("cs3Label", "target"), ("cs3", f["target"])]
    if item.source == "flows":
        pairs += _flow_extension(f)
    if item.details:
        text = json.dumps(item.details, separators=(",", ":"))[:CEF_TEXT_MAX]
        pairs += [("cs4Label", "details"), ("cs4", text)]
    return [*pairs, ("msg", item.message[:CEF_TEXT_MAX])]


def _flow_extension(f: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [
        _address("src", "c6a2", f["src"]),
        _address("dst", "c6a3", f["dst"]),
        ("proto", f["proto"].upper()),
    ]
    pairs += [("dpt", str(f["dport"]))] if f.get("dport") is not None else []
    pairs += [("deviceDirection", "0" if f["direction"] == "in" else "1")]
    pairs += [("cs1Label", "rule"), ("cs1", f["rule"])] if f.get("rule") else []
    if f.get("process"):  # the agent knows the process of its own side
        pairs.append(("dproc" if f["direction"] == "in" else "sproc", f["process"]))
    pairs += [("cnt", str(f.get("connections", 0))), ("cn1Label", "bytes"), ("cn1", str(f.get("bytes", 0)))]
    pairs += [("start", str(int(f["first_seen"] * 1000))), ("end", str(int(f["last_seen"] * 1000)))]
    return pairs


def _address(v4: str, v6: str, address: str) -> tuple[str, str]:
    """CEF's `src`/`dst` are IPv4 only; IPv6 addresses have their own keys."""
    return (v6 if ":" in address else v4), address
