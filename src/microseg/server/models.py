"""Request and response bodies (pydantic v2): what the OpenAPI document publishes.

Object specs stay free-form mappings here on purpose: the policy-file loader is the one place
that knows what a spec may hold, and it reports every problem with its field path.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, with_config
from typing_extensions import TypedDict

from microseg.model import names

Name = Field(min_length=1, max_length=253)
WorkloadName = Annotated[str, Field(pattern=names.OBJECT_NAME.pattern)]
"""What a workload name may be: the one name grammar (`model.names`)."""


class Strict(BaseModel):
    """Unknown fields are errors, as in policy files."""

    model_config = ConfigDict(extra="forbid")


class Metadata(Strict):
    """Name and (for workloads) labels."""

    name: str = Name
    labels: dict[str, str] | None = None


class Document(Strict):
    """An object in policy-file form: `apiVersion`, `kind`, `metadata`, `spec`."""

    apiVersion: Literal["microseg.io/v1"]  # noqa: N815 - the policy-file field name
    kind: str = Field(min_length=1, max_length=32)
    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] | None = None
    """What the server reports (ETag, effective labels, agent state); ignored when written."""

    def plain(self) -> dict[str, Any]:
        """As a plain document (no status, no empty labels)."""
        return self.model_dump(exclude_none=True, exclude={"status"})


APPLY_SET = r"^[A-Za-z0-9][A-Za-z0-9_.:/,+@=-]{0,199}$"
"""What an apply set's name may be: it is no URL segment, so paths (`files:policies/prod`) fit."""


class ApplyRequest(Strict):
    """Documents to create or replace in one go (Policy documents are split into Rules)."""

    documents: list[dict[str, Any]] = Field(max_length=100_000)
    applySet: str | None = Field(default=None, pattern=APPLY_SET)  # noqa: N815 - JSON field name
    """The set of files these documents come from: it manages the objects it applies, and a later
    apply of the same set may remove what it declared before (docs/api.md, "Apply sets"). None:
    the objects join no set (and stay in the one they are in)."""
    prune: bool = False
    """Also delete the objects of this set that `documents` no longer hold (and only those); needs
    `applySet`."""
    dryRun: bool = False  # noqa: N815 - JSON field name
    """Change nothing: answer what would be created, updated and pruned, and the draft diff."""


class NoteRequest(Strict):
    """A note for a provision or a rollback."""

    note: str = Field(default="", max_length=2000)
    force: bool = False
    """Provision even though the policy breaks invariants (audited with what it breaks)."""


class LabelsRequest(Strict):
    """Add and remove labels on the workloads a selector (or a list of names) picks."""

    selector: str | None = Field(default=None, max_length=2000)
    workloads: list[str] | None = Field(default=None, max_length=100_000)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class ModeRequest(Strict):
    """A workload's own enforcement mode."""

    mode: Literal["visibility", "alert", "enforce"]


class QuarantineRequest(Strict):
    """How to quarantine: `forensics` keeps the Settings' quarantineAllow IP list, `full` keeps
    only the agent's control-plane channel."""

    level: Literal["forensics", "full"] = "forensics"
    reason: str = Field(default="", max_length=2000)


class ReleaseRequest(Strict):
    """Why a quarantine ends."""

    reason: str = Field(default="", max_length=2000)


class QuarantineHook(Strict):
    """A quarantine webhook call (EDR, antivirus, SIEM): the workload by exactly one of name,
    address or hostname."""

    workload: str | None = Field(default=None, max_length=253)
    address: str | None = Field(default=None, max_length=64)
    hostname: str | None = Field(default=None, max_length=253)
    action: Literal["quarantine", "release"] = "quarantine"
    level: Literal["forensics", "full"] = "forensics"
    reason: str = Field(default="", max_length=2000)
    alert: str = Field(default="", max_length=300)
    """The calling tool's alert or incident id, kept in the audit record."""


class PromoteRequest(Strict):
    """Move a label scope to a mode; the thresholds say what ready means."""

    scope: str = Field(min_length=1, max_length=1000)
    to: Literal["visibility", "alert", "enforce"]
    since: str | None = Field(default=None, max_length=32)
    force: bool = False
    note: str = Field(default="", max_length=2000)
    min_coverage: float = Field(default=99.0, ge=0, le=100, alias="minCoverage")
    max_would_block: int = Field(default=0, ge=0, alias="maxWouldBlock")
    min_in_sync: float = Field(default=100.0, ge=0, le=100, alias="minInSync")


OWNER = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$"
"""What a token owner may be: a user name or mail address (no spaces or parentheses, so the audit
actor `token:NAME(ID)@OWNER` stays parseable)."""


class TokenRequest(Strict):
    """A new API token."""

    name: str = Field(min_length=1, max_length=100)
    """What the token is for; short, because the audit actor (200 characters) holds it with the owner."""
    role: Literal["viewer", "editor", "admin"]
    owner: str | None = Field(default=None, pattern=OWNER)
    """Who holds it (four-eyes compares owners). Default: the creating token's owner. Approval of
    an exception is refused to a token its requester's owner created, so make a token for another
    person with `microseg token create` or from a token of someone else."""


class EnrollmentTokenRequest(Strict):
    """A new enrollment token: labels that enrolled workloads get, and the mode they start in."""

    name: str = Name
    labels: dict[str, str] = Field(default_factory=dict)
    mode: Literal["visibility", "alert", "enforce"] = "visibility"
    reusable: bool = False
    expiresIn: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)  # noqa: N815
    workloads: list[WorkloadName] = Field(default_factory=list, max_length=10_000)
    """Existing workloads an agent enrolling with this token may adopt (an admin's binding);
    without one, an enrollment whose hostname names an existing workload is refused."""
    addressRanges: list[str] = Field(default_factory=list, max_length=1000)  # noqa: N815
    """CIDRs the token's agents may claim addresses in; empty: any address no workload holds."""

    @field_validator("addressRanges")
    @classmethod
    def _cidrs(cls, ranges: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(r.strip(), strict=True)) for r in ranges]


class Socket(Strict):
    """A listening socket and the process that owns it."""

    protocol: Literal["tcp", "udp", "sctp"]
    address: str = Field(max_length=64)
    port: int = Field(ge=0, le=65535)
    process: str | None = Field(default=None, max_length=300)
    """How flows name the process: its executable path, or its own name when that differs."""
    pid: int | None = Field(default=None, ge=0)
    user: str | None = Field(default=None, max_length=100)
    path: str | None = Field(default=None, max_length=4096)
    """The executable (/proc/PID/exe)."""
    cgroup: str | None = Field(default=None, max_length=4096)
    """The process's cgroup v2 path, what process rules are enforced by."""


class Inventory(Strict):
    """What an agent reports about its host."""

    hostname: str = Field(min_length=1, max_length=253)
    addresses: list[str] = Field(min_length=1, max_length=256)
    os: str = Field(default="linux", max_length=100)
    kernel: str | None = Field(default=None, max_length=200)
    kind: Literal["host", "vm", "container", "pod"] = "vm"
    sockets: list[Socket] = Field(default_factory=list, max_length=10_000)


class EnrollRequest(Strict):
    """An agent's first call: its enrollment token and inventory."""

    token: str = Field(min_length=1, max_length=200)
    inventory: Inventory


class TamperReport(Strict):
    """One change made to the agent's rules outside microseg, and its undoing."""

    at: float = Field(ge=0, le=2**40)
    summary: str = Field(max_length=500)
    changes: list[str] = Field(default_factory=list, max_length=100)
    restoredIn: float = Field(ge=0, le=3600)  # noqa: N815


class RuleCounter(Strict):
    """Packets and bytes one rule decided on the agent's host, in total since the report's epoch."""

    rule: str = Field(min_length=1, max_length=520)
    """The rule's ref (`tier/name`, `default`, `system/...`)."""
    packets: int = Field(ge=0, le=2**62)
    bytes: int = Field(ge=0, le=2**62)


class CounterReport(Strict):
    """The agent's per-rule counters: monotonic totals within one epoch (the lifetime of its data
    plane); a new epoch starts again from zero. Rules left out have not changed."""

    epoch: str = Field(min_length=1, max_length=64)
    rules: list[RuleCounter] = Field(default_factory=list, max_length=10_000)

    @field_validator("rules")
    @classmethod
    def _once_each(cls, rules: list[RuleCounter]) -> list[RuleCounter]:
        seen: set[str] = set()
        for counted in rules:
            if counted.rule in seen:
                raise ValueError(f"rule {counted.rule!r} is counted twice")
            seen.add(counted.rule)
        return rules


class ExpiryReport(Strict):
    """A timed rule whose window closed on the agent's workload, and the connections it cut."""

    rule: str = Field(min_length=1, max_length=520)
    notAfter: int = Field(ge=0, le=2**40)  # noqa: N815
    at: float = Field(ge=0, le=2**40)
    cut: int = Field(ge=0, le=2**62)
    """Connections only this rule allowed, cut (conntrack entries removed)."""
    wouldCut: int = Field(default=0, ge=0, le=2**62)  # noqa: N815
    """The same, left open because the workload does not enforce (alert, visibility)."""


class StatusReport(Strict):
    """What the agent applied, and how it went."""

    appliedHash: str | None = Field(default=None, max_length=80)  # noqa: N815
    dataplane: str | None = Field(default=None, max_length=32)
    errors: list[str] = Field(default_factory=list, max_length=100)
    warnings: list[str] = Field(default_factory=list, max_length=200)
    """What is enforced less exactly than written (e.g. a process rule at port level)."""
    tampered: bool = False
    tamper: list[TamperReport] = Field(default_factory=list, max_length=100)
    """Incidents not reported before: each becomes one `tamper` event."""
    counters: CounterReport | None = None
    """Rule counters (agents before rule hits from counters send none)."""
    expired: list[ExpiryReport] = Field(default_factory=list, max_length=100)
    """Expired rules not reported before (agents before expiry cutting send none)."""


def _ip_pattern() -> str:
    """A regular expression for exactly the IPv4 and IPv6 addresses `ipaddress` reads, less IPv6
    scope ids. A pattern rather than `ipaddress` in a validator: pydantic matches it in Rust, while
    calling Python per address made batch validation four times slower (the ingest hot path)."""
    h, byte = "[0-9A-Fa-f]{1,4}", "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    v4 = rf"(?:{byte}\.){{3}}{byte}"
    tail = f"(?:{h}:{h}|{v4})"  # the last 32 bits: two groups, or a dotted quad
    v6 = [f"(?:{h}:){{6}}{tail}", f"::(?:{h}:){{5}}{tail}", f"(?:{h})?::(?:{h}:){{4}}{tail}"]
    v6 += [f"(?:(?:{h}:){{0,{n - 1}}}{h})?::(?:{h}:){{{5 - n}}}{tail}" for n in (2, 3)]
    v6 += [
        f"(?:(?:{h}:){{0,3}}{h})?::{h}:{tail}",
        f"(?:(?:{h}:){{0,4}}{h})?::{tail}",
        f"(?:(?:{h}:){{0,5}}{h})?::{h}",
        f"(?:(?:{h}:){{0,6}}{h})?::",
    ]
    return f"^(?:{v4}|{'|'.join(v6)})$"


IP_ADDRESS = _ip_pattern()
FlowAddress = Annotated[str, Field(max_length=64, pattern=IP_ADDRESS)]
"""One end of a flow record: a single IP address, no CIDR, no name (a name or a CIDR stored once
poisoned every analysis after it)."""


@with_config(ConfigDict(extra="forbid"))
class FlowRecord(TypedDict):
    """One flow summary as an agent saw it (the client's ephemeral port dropped).

    A TypedDict, not a model: batches are the hot path, and validating straight into dicts is
    about twice as fast as building a thousand model objects per batch."""

    direction: Literal["in", "out"]
    src: FlowAddress
    dst: FlowAddress
    dport: NotRequired[Annotated[int | None, Field(ge=0, le=65535)]]
    proto: Literal["tcp", "udp", "sctp", "icmp", "other"]
    process: NotRequired[Annotated[str | None, Field(max_length=300)]]
    user: NotRequired[Annotated[str | None, Field(max_length=100)]]
    bytes: NotRequired[Annotated[int, Field(ge=0, le=2**62)]]
    packets: NotRequired[Annotated[int, Field(ge=0, le=2**62)]]
    connections: NotRequired[Annotated[int, Field(ge=0, le=2**62)]]
    """Connections (or, for blocked ones, attempts) the record sums up."""
    first_seen: Annotated[float, Field(ge=0, le=2**40, allow_inf_nan=False)]
    last_seen: Annotated[float, Field(ge=0, le=2**40, allow_inf_nan=False)]
    """Checked against the server's clock at ingest (`server.ingest`), not here."""
    verdict: Literal["allowed", "blocked", "would-block"]
    rule: NotRequired[Annotated[str | None, Field(max_length=200)]]


FLOW_DEFAULTS = {
    "dport": None,
    "process": None,
    "user": None,
    "bytes": 0,
    "packets": 0,
    "connections": 0,
    "rule": None,
}
"""What a record means when it leaves a field out."""


@with_config(ConfigDict(extra="forbid"))
class FlowBatch(TypedDict):
    """A batch of flow records; a batch id seen twice is stored once."""

    batch_id: Annotated[str, Field(min_length=1, max_length=100)]
    records: Annotated[list[FlowRecord], Field(max_length=100_000)]


FLOW_BATCH = TypeAdapter(FlowBatch)


class ExplainRequest(Strict):
    """A flow to explain: workload names or addresses, and a port as `--port` reads it (`3306/tcp`,
    `tcp/3306`, `8000-8080/tcp`, `icmp`, or a service of that version); optionally the processes
    and the time, under `active`, `draft` or a version number."""

    source: str = Field(min_length=1, max_length=300, alias="from")
    destination: str = Field(min_length=1, max_length=300, alias="to")
    port: str = Field(min_length=1, max_length=100, examples=["3306/tcp"])
    process: str | None = Field(default=None, max_length=300)
    client_process: str | None = Field(default=None, max_length=300, alias="clientProcess")
    at: AwareDatetime | None = Field(default=None, description="RFC 3339 with a zone; default now")
    version: str = Field(default="active", max_length=20)

    @field_validator("at")
    @classmethod
    def _within_calendar(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        """Years 1970-9998 in any zone: past the end of the calendar, UTC arithmetic overflows."""
        if value is not None and not EXPLAIN_FROM <= value <= EXPLAIN_UNTIL:
            raise ValueError("must be between 1970 and 9998")
        return value


EXPLAIN_FROM = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
EXPLAIN_UNTIL = datetime.datetime(9998, 12, 31, tzinfo=datetime.UTC)
