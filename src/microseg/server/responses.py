"""Response bodies (pydantic v2) of the listings that are not policy documents: provisioned
versions and agents. The routes declare them, so the OpenAPI document publishes their shape, and
the CLI reads the same models (`cli/remote.py`), so both sides agree on one definition.

Fields are in the order the server has always sent them: FastAPI serializes through the model,
and `-o json` prints what the server sent. A field the server builds but does not declare here is
dropped from the answer, so a new field is added here first. Unknown fields are ignored when
read, so a CLI reads a newer server. Requests are in `models.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ResponseBody(BaseModel):
    """A response body: read-only once parsed; the field docstrings are its OpenAPI descriptions."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


Change = Literal["added", "removed", "changed"]
"""How an object (`Kind/name`) differs in a version from the version before it."""


class Version(ResponseBody):
    """One provisioned version, without its documents (`GET /versions/{number}` has them)."""

    number: int
    name: str
    """`v` and the number."""
    note: str
    createdAt: float  # noqa: N815 - the JSON field name
    """Epoch seconds."""
    createdBy: str  # noqa: N815
    """The audit actor who provisioned it."""
    rollbackOf: int | None  # noqa: N815
    """The version whose content it provisioned again, if it is a rollback."""
    changes: dict[Change, list[str]]
    """The objects added, removed and changed against the version before it. A mapping, not a
    model, on purpose: its keys stay in the order the database keeps them (PostgreSQL's JSONB
    reorders them), as the server has always sent them."""


class VersionList(ResponseBody):
    """`GET /versions`: newest first."""

    items: list[Version]


AgentState = Literal["in sync", "stale", "failed", "tampered", "no agent"]
"""`server.status.STATES`: in sync with the ruleset it should hold, or not and why."""


class Agent(ResponseBody):
    """An enrolled agent with its state (never its credential)."""

    id: str
    workload: str
    state: AgentState
    online: bool
    lastSeen: float  # noqa: N815 - the JSON field name
    """Epoch seconds of its last call."""
    enrolledAt: float  # noqa: N815
    enrollmentToken: str | None  # noqa: N815
    """The enrollment token it enrolled with (its grants bound the agent); null for agents enrolled
    before migration 0006."""
    appliedHash: str | None  # noqa: N815
    expectedHash: str | None  # noqa: N815
    """The hash of the ruleset it should hold; null when the server has none for it yet."""
    dataplane: str | None
    errors: list[str]
    warnings: list[str]
    tampered: bool
    revoked: bool
    inventory: dict[str, Any]
    """Its last inventory report as stored (`models.Inventory` when it was sent); kept free-form
    because reports stored by older servers lack fields added since."""
    silentFor: float  # noqa: N815
    """Seconds since its last call, to a tenth."""


class AgentList(ResponseBody):
    """`GET /agents`: every agent, by workload."""

    items: list[Agent]
