"""Object names: the one grammar of `metadata.name` in policy files and on the server.

A name is 1-253 letters, digits, `_`, `.`, `:` and `-`, starting and ending with a letter or a
digit. Every name is a single URL path segment and a single word in a message, so `/`, spaces and
anything a URL or a shell would read are left out; `.` and `:` are in, because names of other
systems carry them (`crm-prod.web-7d9f` for a pod, `db.example.com` for a host). Kinds may be
stricter where a name becomes something else: rule names (nftables comments, lowercase, 64) and tier
names (nftables chain names, 32) are checked by their own models; every one of them also fits here.

What it deliberately does not do: decide uniqueness (the loader does, per kind).
"""

from __future__ import annotations

import re

from microseg.errors import ValidationError

MAX_LENGTH = 253
OBJECT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]{0,251}[A-Za-z0-9])?$")
"""What `metadata.name` may be, in a policy file and in the API."""
GRAMMAR = f"1-{MAX_LENGTH} letters, digits, '_', '.', ':', '-', starting and ending with a letter or digit"


def check(name: str, noun: str = "name") -> str:
    """`name` when it fits the grammar, else a ValidationError saying what it is and what fits."""
    if OBJECT_NAME.fullmatch(name):
        return name
    hint = " ('/' is not allowed: write 'namespace.pod' for a pod)" if "/" in name else ""
    raise ValidationError(f"{noun} {name!r}: {GRAMMAR}{hint}", "name")
