"""Signed webhooks for EDR, antivirus and SIEM tools: quarantine or release a workload.

Such tools rarely hold an API token; they sign their call instead. The caller names its hook
(`X-Microseg-Hook: NAME`, one secret per tool in the server's `hook_secrets`) and sends
`X-Microseg-Timestamp: UNIX-SECONDS` and `X-Microseg-Signature: sha256=HEX`, the HMAC-SHA256 with
the tool's secret of `TIMESTAMP.BODY`. A timestamp more than five minutes away, or a signature
this replica has already accepted in that window, is refused (401), so a captured call cannot be
replayed. Every call acts as `hook:NAME` in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from microseg.server import deps, models
from microseg.server import quarantine as quarantines
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime

Rt = Annotated[Runtime, Depends(deps.runtime)]
router = APIRouter(prefix="/api/v1/hooks", tags=["hooks"])
WINDOW = 300.0
"""Seconds a signed call stays valid (clocks of the caller and the server may differ this much)."""
HOOK_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/QuarantineHook"}}}}}  # fmt: skip


class Replays:
    """Signatures accepted in the last WINDOW seconds (per replica)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, signature: str, now: float) -> bool:
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= 2 * WINDOW}
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True


REPLAYS = Replays()


def secrets_of(rt: Runtime) -> dict[str, bytes]:
    """Hook name -> secret, from the settings."""
    out: dict[str, bytes] = {}
    for item in rt.settings.hook_secrets:
        name, _, secret = item.partition("=")
        if name and secret:
            out[name.strip()] = secret.strip().encode()
    return out


def verify(rt: Runtime, request: Request, body: bytes, now: float) -> str:
    """The hook name of a correctly signed, fresh call; 401 otherwise (404 when none is set up)."""
    known = secrets_of(rt)
    if not known:
        raise Problem(404, "Not found", "no webhooks are configured on this server (hook_secrets)")
    name = request.headers.get("x-microseg-hook", "")
    stamp = request.headers.get("x-microseg-timestamp", "")
    given = request.headers.get("x-microseg-signature", "").removeprefix("sha256=")
    secret = known.get(name)
    if secret is None:
        raise Problem(401, "Unauthorized", "unknown hook (X-Microseg-Hook)")
    try:
        sent = float(stamp)
    except ValueError:
        raise Problem(401, "Unauthorized", "X-Microseg-Timestamp must be UNIX seconds") from None
    if abs(now - sent) > WINDOW:
        raise Problem(401, "Unauthorized", f"the timestamp is more than {WINDOW:.0f} s off the server clock")
    wanted = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(wanted, given):
        raise Problem(401, "Unauthorized", "bad signature (HMAC-SHA256 of TIMESTAMP.BODY, as sha256=HEX)")
    if not REPLAYS.first_time(given, now):
        raise Problem(401, "Unauthorized", "this signed call was already used")
    return name


@router.post(
    "/quarantine", summary="Quarantine or release a workload (signed: HMAC-SHA256)", openapi_extra=HOOK_BODY
)
async def quarantine_hook(rt: Rt, request: Request) -> dict[str, Any]:
    raw = await request.body()
    name = verify(rt, request, raw, time.time())
    try:
        call = models.QuarantineHook.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    return await run_in_threadpool(_act, rt, Principal("hook", "", name), call)


def _act(rt: Runtime, who: Principal, call: models.QuarantineHook) -> dict[str, Any]:
    with rt.db.read() as conn:
        target = quarantines.resolve(
            rt, conn, workload=call.workload, address=call.address, hostname=call.hostname
        )
    reason = f"{call.reason} (alert {call.alert})" if call.alert else call.reason
    if call.action == "release":
        return quarantines.release(rt, who, target, reason)
    return quarantines.isolate(rt, who, target, call.level, reason)
