"""The draft and provisioned versions: export, diff, revert, provision, list, show, rollback; and
explained verdicts against the active version or the draft."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from microseg import errors
from microseg.analytics import explaining
from microseg.engine import engine as engines
from microseg.server import auth, compose, deps, kinds, models, provisioning, responses
from microseg.server.auth import Principal
from microseg.server.runtime import Runtime
from microseg.store import objects, versions

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Editor = Annotated[Principal, Depends(auth.editor)]
router = APIRouter(prefix="/api/v1", tags=["policy"])
Number = Annotated[int, Path(ge=0, le=provisioning.MAX_VERSION, description="a version number")]


@router.get("/draft", summary="The draft's objects (format=policy groups rules into Policy documents)")
def draft(
    rt: Rt, _: Viewer, format: Annotated[str, Query(pattern="^(objects|policy)$")] = "objects"
) -> dict[str, Any]:
    with rt.db.read() as conn:
        docs = provisioning.draft_documents(conn)
    items = compose.policy_file_documents(docs) if format == "policy" else docs
    return {"kind": "List", "apiVersion": kinds.API_VERSION, "items": items}


@router.get("/draft/diff", summary="Draft against the active version: objects, rules, reachability")
def draft_diff(rt: Rt, _: Viewer) -> dict[str, Any]:
    return provisioning.diff(rt, "active", "draft")


@router.delete("/draft", summary="Throw away the draft's edits (back to the active version)")
def revert(rt: Rt, who: Editor) -> dict[str, Any]:
    return {"reverted": provisioning.revert_draft(rt, who)}


@router.get("/versions", summary="Provisioned versions, newest first")
def list_versions(
    rt: Rt,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=provisioning.MAX_VERSION)] = None,
) -> responses.VersionList:
    with rt.db.read() as conn:
        found = versions.listing(conn, limit, before)
    return responses.VersionList.model_validate({"items": [provisioning.version_json(v) for v in found]})


@router.post("/versions", status_code=201, summary="Provision the draft as the next version")
def provision(rt: Rt, who: Editor, body: models.NoteRequest) -> JSONResponse:
    done = provisioning.provision(rt, who, body.note, force=body.force)
    return JSONResponse(done.to_json(), 201)


@router.get("/versions/{number}", summary="One version with its objects")
def show_version(rt: Rt, _: Viewer, number: Number) -> dict[str, Any]:
    with rt.db.read() as conn:
        found = versions.get(conn, number)
    if found is None:
        raise errors.LookupFailedError(f"no version {number}")
    return provisioning.version_json(found, documents=True)


@router.get("/diff", summary="Diff any two of: draft, active, a version number")
def diff(
    rt: Rt,
    _: Viewer,
    old: Annotated[str, Query(alias="from", max_length=20)],
    new: Annotated[str, Query(alias="to", max_length=20)],
) -> dict[str, Any]:
    return provisioning.diff(rt, old, new)


@router.post("/versions/{number}/rollback", status_code=201, summary="Provision an older version again")
def rollback(rt: Rt, who: Editor, number: Number, body: models.NoteRequest) -> JSONResponse:
    done = provisioning.rollback(rt, who, number, body.note, force=body.force)
    return JSONResponse(done.to_json(), 201)


EXPLAINED_PORTS = 1024
"""Ports one `/explain` evaluates at most: the engine lock is held meanwhile, so a viewer asking
for every port of a protocol would hold up everyone (`microseg explain` on files has no limit)."""


@router.post("/explain", summary="Explained verdicts for a flow on each port asked, under any version")
def explain(rt: Rt, _: Viewer, body: models.ExplainRequest) -> dict[str, Any]:
    """`verdicts`: one per run of consecutive ports with one verdict. With a single run (always for
    a single port) also `port` and `verdict`, as before ranges and services were accepted."""
    eng = engine(rt, body.version)
    flow = explaining.Flow(
        body.source, body.destination, body.port, body.process, body.client_process, body.at
    )
    asked = explaining.probes(body.port, eng.estate, limit=EXPLAINED_PORTS)
    with rt.engine_lock:
        runs = explaining.runs(eng, flow, asked)
    one = runs[0] if len(runs) == 1 else None
    return {
        "from": runs[0].source,
        "to": runs[0].destination,
        "port": one.port if one else None,
        "version": body.version,
        **({"verdict": one.verdict.to_dict()} if one else {}),
        "verdicts": [{"port": r.port, "verdict": r.verdict.to_dict()} for r in runs],
    }


def engine(rt: Runtime, ref: str) -> engines.PolicyEngine:
    """The engine of `active`, `draft` or a version number (LookupFailedError when none)."""
    if ref == "active":
        compiled = rt.compiled()
        if compiled.engine is None:
            raise errors.LookupFailedError("nothing is provisioned yet")
        return compiled.engine
    with rt.db.read() as conn:
        docs = provisioning.version_documents(conn, ref)
        live = objects.of_kinds(conn, kinds.LIVE)
    return engines.PolicyEngine(rt.estate(docs, live, 0))
