"""Signed webhooks for EDR, antivirus and SIEM tools: quarantine or release a workload.

Such tools rarely hold an API token; they sign their call instead. The caller names its hook
(`X-Microseg-Hook: NAME`, one secret per tool in the server's `hook_secrets`) and sends
`X-Microseg-Timestamp: UNIX-SECONDS` (digits only) and `X-Microseg-Signature: sha256=HEX`, the
HMAC-SHA256 with the tool's secret of `TIMESTAMP.BODY`. A timestamp more than five minutes away,
or a signature already accepted (by any replica, before or after a restart: `store.replays`), is
refused (401), so a captured call cannot be replayed. A signed body with a key twice is refused
(422): the signer's JSON reader and ours could take different values from it.

Each hook is scoped (`config.HOOK_ACTIONS`): without a scope it may only quarantine; `release`
lets it release a quarantine that hooks set, `release-any` also one a person set (lowering a
person's `full` quarantine to `forensics` counts as releasing it). A call outside its scope is 403
and changes nothing. Every call acts as `hook:NAME` in the audit log.

A hostname is what agents report, so another agent may claim a victim's: a quarantine by hostname
isolates every workload reporting it (the answer lists the others under `alsoQuarantined`), while
a release by an ambiguous hostname is refused (422).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any

import pydantic
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from microseg.server import config, deps, models
from microseg.server import quarantine as quarantines
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import audit, replays

Rt = Annotated[Runtime, Depends(deps.runtime)]
Doc = dict[str, Any]
router = APIRouter(prefix="/api/v1/hooks", tags=["hooks"])
WINDOW = 300
"""Seconds a signed call stays valid (clocks of the caller and the server may differ this much)."""
REMEMBERED = 2 * WINDOW
"""Seconds past its timestamp a call is remembered: the window, plus as much for replicas whose
clocks differ from the one that accepted it."""
STAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
HOOK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QuarantineHook"}}},
    }
}


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail)


def verify(rt: Runtime, request: Request, body: bytes, now: float) -> config.HookSecret:
    """The hook of a correctly signed, fresh call; 401 otherwise (404 when none is set up).

    Does not look for replays: `claim` does, once the call is known to be acceptable."""
    known = rt.settings.hooks()
    if not known:
        raise Problem(404, "Not found", "no webhooks are configured on this server (hook_secrets)")
    hook = known.get(request.headers.get("x-microseg-hook", ""))
    if hook is None:
        raise _unauthorized("unknown hook (X-Microseg-Hook)")
    stamp = request.headers.get("x-microseg-timestamp", "")
    if not STAMP.fullmatch(stamp):  # int() and float() take signs, '_', 'nan', 'inf' and '1e3'
        raise _unauthorized("X-Microseg-Timestamp must be whole UNIX seconds, digits only")
    if abs(now - int(stamp)) > WINDOW:
        raise _unauthorized(f"the timestamp is more than {WINDOW} s off the server clock")
    given = request.headers.get("x-microseg-signature", "")
    wanted = "sha256=" + hmac.new(hook.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not SIGNATURE.fullmatch(given) or not hmac.compare_digest(wanted, given):
        raise _unauthorized("bad signature (HMAC-SHA256 of TIMESTAMP.BODY, as sha256=HEX)")
    return hook


def parse(raw: bytes) -> models.QuarantineHook:
    """The call's body; 422 for invalid JSON, a key given twice, or a body the model refuses."""
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Problem(422, "Invalid request", f"the body is not acceptable JSON: {exc}") from None
    try:
        return models.QuarantineHook.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> Doc:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"key {', '.join(map(repr, twice))} given more than once")
    return dict(pairs)


def allow(hook: config.HookSecret, action: str) -> None:
    """403 unless the hook's scope includes `action`."""
    if action not in hook.actions:
        scope = "+".join(sorted(hook.actions))
        raise Problem(403, "Forbidden", f"hook {hook.name} may not {action} (its scope: {scope})")


def claim(rt: Runtime, hook: config.HookSecret, request: Request, now: float) -> None:
    """Remember the call's signature in the database; 401 when it was accepted before."""
    signature = request.headers["x-microseg-signature"]
    until = int(request.headers["x-microseg-timestamp"]) + REMEMBERED
    with rt.db.write() as conn:
        first = replays.claim(rt.db, conn, signature, hook=hook.name, expires_at=until, now=now)
    if not first:
        raise _unauthorized("this signed call was already used")


@router.post(
    "/quarantine", summary="Quarantine or release a workload (signed: HMAC-SHA256)", openapi_extra=HOOK_BODY
)
async def quarantine_hook(rt: Rt, request: Request) -> dict[str, Any]:
    raw = await request.body()
    return await run_in_threadpool(_handle, rt, request, raw)


def _handle(rt: Runtime, request: Request, raw: bytes) -> Doc:
    """Check the call whole (signature, body, scope), use it up, then act."""
    now = time.time()
    hook = verify(rt, request, raw, now)
    call = parse(raw)
    allow(hook, call.action)
    claim(rt, hook, request, now)
    return _act(rt, hook, call)


def _act(rt: Runtime, hook: config.HookSecret, call: models.QuarantineHook) -> Doc:
    who = Principal("hook", "", hook.name)
    with rt.db.read() as conn:
        if call.action == "release":  # a release must name exactly one workload
            target = quarantines.resolve(
                rt, conn, workload=call.workload, address=call.address, hostname=call.hostname
            )
        else:
            targets = quarantines.candidates(
                rt, conn, workload=call.workload, address=call.address, hostname=call.hostname
            )
    reason = f"{call.reason} (alert {call.alert})" if call.alert else call.reason
    if call.action == "release":
        return quarantines.release(rt, who, target, reason, check=_release_check(hook, target))
    done = [
        quarantines.isolate(rt, who, name, call.level, reason, check=_release_check(hook, name))
        for name in targets
    ]
    return done[0] if len(done) == 1 else {**done[0], "alsoQuarantined": [d["workload"] for d in done[1:]]}


def _release_check(hook: config.HookSecret, name: str) -> quarantines.ReleaseCheck:
    """Refuses (403) a hook without `release-any` to end (or lower from full to forensics) a
    quarantine a person had a hand in."""

    def check(conn: sa.Connection, snapshot: Doc | None) -> None:
        if "release-any" in hook.actions:
            return
        people = sorted({a for a in _holders(conn, name, snapshot) if not a.startswith("hook:")})
        if people:
            why = f"{name} was quarantined by {', '.join(people)}; hook {hook.name} lacks release-any"
            raise Problem(403, "Forbidden", why)

    return check


def _holders(conn: sa.Connection, name: str, snapshot: Doc | None) -> Iterator[str]:
    """Who set the current quarantine or changed its level since (a label edit counts as a person)."""
    if snapshot is None:
        yield "whoever set the quarantine label"
        return
    yield snapshot["actor"]
    target, after = f"Workload/{name}", snapshot["id"]
    while page := audit.query(conn, after=after, limit=1000, target=target):
        yield from (r["actor"] for r in page if r["target"] == target and r["action"] == quarantines.RELEVEL)
        after = page[-1]["id"]
