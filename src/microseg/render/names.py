"""Names and quoted strings the renderers may emit, whatever a document contains.

Documents arrive as JSON from the network, so a set name, tier or rule reference may hold
anything. Everything that reaches nft or iptables text passes through here: identifiers are
sanitised (and made unique by a short hash when they had to change or were too long), quoted
strings lose characters that could end the quote, and lengths respect kernel limits.

It does not know rules or documents; the renderers call it per name.
"""

from __future__ import annotations

import hashlib
import re

from microseg.errors import ValidationError

NFT_COMMENT_MAX = 128
"""nft refuses longer comments ("comment too long, 128 characters maximum allowed")."""

NFT_LOG_PREFIX_MAX = 127
"""NF_LOG_PREFIXLEN is 128 including the terminating NUL; nft 1.0.6 rejects 128 characters."""

IPT_LOG_PREFIX_MAX = 63
"""xt_NFLOG's prefix field is 64 bytes with the NUL (iptables-legacy enforces it)."""

IPT_COMMENT_MAX = 255
"""xt_comment holds 256 bytes with the NUL."""

IPT_CHAIN_MAX = 28
"""XT_EXTENSION_MAXNAMELEN (29) minus the NUL."""

IPSET_NAME_MAX = 31
"""IPSET_MAXNAMELEN (32) minus the NUL."""

_NFT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_IPT_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 _./:=@+,-]")


def digest(text: str, length: int = 8) -> str:
    """A short, stable hash that keeps shortened names unique."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def nft_identifier(name: str, limit: int = 64) -> str:
    """`name` when it is already a plain nft identifier, else a sanitised name with a hash suffix.

    nft identifiers start with a letter; we allow letters, digits, '_' and '-' after it (nft also
    takes '.' and '/', which we avoid so names read the same in iptables and logs).
    """
    if _NFT_ID.fullmatch(name) and len(name) <= limit:
        return name
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if not safe[:1].isalpha():
        safe = "x" + safe
    return f"{safe[: limit - 9]}_{digest(name)}"


def table_name(name: str) -> str:
    """The configured table name, which must be a plain identifier (it is a setting, not data)."""
    if not _NFT_ID.fullmatch(name) or len(name) > 64:
        raise ValidationError(f"table name {name!r}: letters, digits, '_' and '-', starting with a letter")
    return name


def text(value: str, limit: int) -> str:
    """`value` made safe inside double quotes (nft comments and prefixes, iptables comments)."""
    return _UNSAFE_TEXT.sub("_", value)[:limit]


def log_prefix(kind: str, ref: str, limit: int) -> str:
    """`ms:<kind>:<ref>`: kind `d` = dropped (enforce), `w` = would-block (alert)."""
    return text(f"ms:{kind}:{ref}", limit)


def ipt_prefix(prefix: str) -> str:
    """The upper-case chain prefix (`MS`) from `RenderSettings.ipset_prefix`."""
    if not _IPT_ID.fullmatch(prefix) or len(prefix) > 8:
        raise ValidationError(f"ipset prefix {prefix!r}: up to 8 letters, digits, '_', '.', '-'")
    return prefix.upper()


def ipt_tier(prefix: str, tier: str) -> str:
    """The tier part of `<P>-IN-<tier>` / `<P>-OUT-<tier>`, shortened with a hash to fit 28 chars."""
    budget = IPT_CHAIN_MAX - len(f"{ipt_prefix(prefix)}-OUT-")
    if _IPT_ID.fullmatch(tier) and len(tier) <= budget:
        return tier
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tier)
    return f"{safe[: budget - 7]}-{digest(tier, 6)}"


def ipset_name(prefix: str, set_name: str, family: int) -> str:
    """`<prefix><4|6>-<set>`, at most 29 chars so that the `-t` swap twin fits 31."""
    head = f"{prefix}{family}-"
    budget = IPSET_NAME_MAX - 2 - len(head)
    if _IPT_ID.fullmatch(set_name) and len(set_name) <= budget:
        return head + set_name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", set_name)
    return f"{head}{safe[: budget - 9]}-{digest(set_name)}"


def unique(mapping: dict[str, str], kind: str) -> dict[str, str]:
    """`mapping` (original -> emitted) unchanged, or an error if two originals collide."""
    seen: dict[str, str] = {}
    for original, emitted in mapping.items():
        if emitted in seen:
            raise ValidationError(f"{kind} names {seen[emitted]!r} and {original!r} both become {emitted!r}")
        seen[emitted] = original
    return mapping
