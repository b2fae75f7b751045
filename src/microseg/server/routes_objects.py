"""CRUD for every object kind (one router per kind, made by `object_router`), bulk apply, labels.

GET lists (workloads filter by a kubectl selector and page with `limit` / `continue`) and reads one
object with its ETag; POST creates (409 when it exists); PUT creates or replaces, honouring
If-Match and If-None-Match; DELETE honours If-Match. Policy kinds change the draft; live kinds the
inventory. Rules live under /rules/{tier}/{name}.

The factory is the same for every kind; what a kind does differently (its item path, how a
selector picks its listing, what its listing adds to each object's status) is its row in `ROUTES`.

No `from __future__ import annotations` here: the per-kind routes close over a local dependency,
and FastAPI must see their annotations as objects, not strings.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from microseg import errors
from microseg.model import labelrules, workloads
from microseg.server import auth, compose, deps, exceptions, kinds, models, service, status
from microseg.server import quarantine as quarantines
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, objects

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Editor = Annotated[Principal, Depends(auth.editor)]
IfMatch = Annotated[str | None, Header()]
IfNoneMatch = Annotated[str | None, Header()]


def one(stored: objects.Stored, code: int = 200, extra: dict[str, Any] | None = None) -> JSONResponse:
    """An object with its ETag header."""
    body = {
        **stored.doc,
        "status": {
            "etag": stored.etag,
            "updatedAt": stored.updated_at,
            "updatedBy": stored.updated_by,
            **(extra or {}),
        },
    }
    return JSONResponse(body, code, headers={"ETag": f'"{stored.etag}"'})


def object_router(kind: kinds.Kind) -> APIRouter:
    """GET/POST on the collection, GET/PUT/DELETE on one object, for one kind."""
    router = APIRouter(prefix=f"/api/v1/{kind.path}", tags=[kind.name])
    own = ROUTES.get(kind.name, KindRoutes())

    def key(name: str, tier: str | None = None) -> str:
        return f"{tier}/{name}" if tier is not None else name

    @router.get("", summary=f"List {kind.path}")
    def list_objects(
        rt: Rt,
        _: Viewer,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        after: Annotated[str | None, Query(alias="continue", max_length=600)] = None,
        selector: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> dict[str, Any]:
        with rt.db.read() as conn:
            if own.select is not None and selector:
                found = own.select(rt, conn, selector)
                found = [o for o in found if after is None or o.name > after][: limit + 1]
            else:
                found = objects.page(conn, kind.name, after, limit + 1)
            page = found[:limit]
            context = own.context(conn, [o.name for o in page]) if own.context is not None else None
        extras = context.statuses(rt, page) if context is not None else [{} for _ in page]
        items = [_listed(o, extra) for o, extra in zip(page, extras, strict=True)]
        more = len(found) > limit
        return {"kind": f"{kind.name}List", "items": items, "continue": page[-1].name if more else None}

    @router.post("", status_code=201, summary=f"Create a {kind.name}")
    def create(rt: Rt, who: Editor, body: models.Document) -> JSONResponse:
        try:
            stored, _ = service.save(rt, who, body.plain(), kind=kind.name, if_none_match="*")
        except Problem as exc:
            if exc.status == 412:
                raise Problem(409, "Conflict", f"{kind.name} {body.metadata.name} already exists") from None
            raise
        return one(stored, 201)

    @router.get(own.item, summary=f"Read a {kind.name}")
    def read(rt: Rt, _: Viewer, name: Annotated[str, Depends(key)]) -> JSONResponse:
        with rt.db.read() as conn:
            stored = objects.get(conn, kind.name, name)
        if stored is None:
            raise errors.LookupFailedError(f"no {kind.name} called {name!r}")
        return one(stored)

    @router.put(own.item, summary=f"Create or replace a {kind.name}")
    def replace(
        *,
        rt: Rt,
        who: Editor,
        name: Annotated[str, Depends(key)],
        body: models.Document,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> JSONResponse:
        stored, created = service.save(
            rt, who, body.plain(), kind=kind.name, name=name, if_match=if_match, if_none_match=if_none_match
        )
        return one(stored, 201 if created else 200)

    @router.delete(own.item, status_code=204, summary=f"Delete a {kind.name}")
    def delete(rt: Rt, who: Editor, name: Annotated[str, Depends(key)], if_match: IfMatch = None) -> Response:
        service.remove(rt, who, kind.name, name, if_match)
        return Response(status_code=204)

    return router


class PageContext(Protocol):
    """What a kind's listing reads in its transaction for the status of one page of objects."""

    def statuses(self, rt: Runtime, page: list[objects.Stored]) -> list[dict[str, Any]]:
        """What each object of the page adds to its status, in order; called after the read
        transaction (it may take the engine's lock, which is not held inside a database read)."""
        ...


@dataclass(frozen=True)
class WorkloadContext:
    """A page of workloads' status: label rules, mode scopes and the page's agents read in the
    listing's transaction, the hashes their agents should hold taken after it (in one hold of the
    engine lock for the whole page)."""

    rules: tuple[labelrules.LabelRule, ...]
    scopes: list[compose.ModeScope]
    agents: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, conn: sa.Connection, names: list[str]) -> "WorkloadContext":
        """What the status of the workloads `names` needs from the database."""
        scopes = [compose.mode_scope(o.doc) for o in objects.of_kinds(conn, ("ModeScope",))]
        rules = service.label_rules(conn)
        return cls(rules, scopes, {a["workload"]: a for a in agents.of_workloads(conn, names)})

    def statuses(self, rt: Runtime, page: list[objects.Stored]) -> list[dict[str, Any]]:
        """Effective labels and mode, quarantine and agent state of each workload (`server.status`)."""
        expected = rt.expected_hashes([o.name for o in page], latest=False)
        return [self._status(rt, o, expected.get(o.name)) for o in page]

    def _status(self, rt: Runtime, o: objects.Stored, expected: str | None) -> dict[str, Any]:
        w, agent = rt.workloads.model(o.doc, o.etag), self.agents.get(o.name)
        return status.workload_status(w, self.rules, self.scopes, agent, expected)


@dataclass(frozen=True)
class KindRoutes:
    """What one kind's routes do beyond the generic CRUD of `object_router`."""

    item: str = "/{name}"
    """The path of one object under the collection."""
    select: Callable[[Runtime, sa.Connection, str], list[objects.Stored]] | None = None
    """The objects a listing's `selector` picks (None: the kind ignores `selector`)."""
    context: Callable[[sa.Connection, list[str]], PageContext] | None = None
    """Reads, for the names of a listed page, what the listing adds to each status (None: only
    the ETag and who changed it, when)."""


ROUTES: dict[str, KindRoutes] = {
    "Rule": KindRoutes(item="/{tier}/{name}"),
    "Workload": KindRoutes(select=service.select_workloads, context=WorkloadContext.read),
}
"""The kinds whose routes differ from the defaults (`KindRoutes()`)."""


def _listed(o: objects.Stored, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **o.doc,
        "status": {"etag": o.etag, "updatedAt": o.updated_at, "updatedBy": o.updated_by, **extra},
    }


router = APIRouter(prefix="/api/v1", tags=["inventory"])


@router.post(
    "/apply",
    summary="Create or merge many objects as one apply set, all or none; `prune`, `dryRun`",
)
def apply(rt: Rt, who: Editor, body: models.ApplyRequest) -> dict[str, Any]:
    return service.apply(
        rt, who, body.documents, apply_set=body.applySet, prune=body.prune, dry_run=body.dryRun
    )


@router.get("/labels", summary="Label keys and values in use (effective labels)")
def labels_in_use(rt: Rt, _: Viewer) -> dict[str, list[str]]:
    with rt.db.read() as conn:
        rules = service.label_rules(conn)
        found: dict[str, set[str]] = {}
        for o in objects.of_kinds(conn, ("Workload",)):
            for k, v in labelrules.effective_labels(rt.workloads.model(o.doc, o.etag), rules).items():
                found.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in sorted(found.items())}


@router.post("/labels/bulk", summary="Add and remove labels on many workloads at once")
def bulk_labels(rt: Rt, who: Editor, body: models.LabelsRequest) -> dict[str, list[str]]:
    if (body.selector is None) == (body.workloads is None):
        raise errors.ValidationError("give exactly one of selector and workloads")
    with rt.db.read() as conn:
        names = body.workloads or [o.name for o in service.select_workloads(rt, conn, body.selector)]
    changed = service.modify_workloads(rt, who, names, service.relabel(body.add, body.remove), "relabel")
    return {"changed": changed}


def _action(
    rt: Runtime, who: Principal, name: str, change: Callable[[dict[str, Any]], dict[str, Any]], action: str
) -> JSONResponse:
    service.modify_workloads(rt, who, [name], change, action)
    with rt.db.read() as conn:
        stored = objects.get(conn, "Workload", name)
    assert stored is not None
    return one(stored)


@router.post("/workloads/{name}/quarantine", summary="Isolate a workload (level forensics or full)")
def quarantine(rt: Rt, who: Editor, name: str, body: models.QuarantineRequest | None = None) -> JSONResponse:
    ask = body or models.QuarantineRequest()
    quarantines.isolate(rt, who, name, ask.level, ask.reason)
    return _current(rt, name)


@router.post("/workloads/{name}/release", summary="End a quarantine: the labels and mode from before")
def release(rt: Rt, who: Editor, name: str, body: models.ReleaseRequest | None = None) -> JSONResponse:
    quarantines.release(rt, who, name, (body or models.ReleaseRequest()).reason)
    return _current(rt, name)


@router.post("/exceptions/{name}/approve", summary="Approve a requested exception (not its own requester)")
def approve_exception(rt: Rt, who: Editor, name: str) -> dict[str, Any]:
    return exceptions.approve(rt, who, name)


def _current(rt: Runtime, name: str) -> JSONResponse:
    with rt.db.read() as conn:
        stored = objects.get(conn, "Workload", name)
    assert stored is not None
    return one(stored)


@router.put("/workloads/{name}/mode", summary="Set a workload's own enforcement mode")
def set_mode(rt: Rt, who: Editor, name: str, body: models.ModeRequest) -> JSONResponse:
    return _action(rt, who, name, service.set_mode(workloads.Mode(body.mode)), "set-mode")
