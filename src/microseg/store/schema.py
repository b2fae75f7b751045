"""The tables, in SQLAlchemy Core. Migrations (`microseg.store.migrations`) create exactly these;
a test compares the two.

Times are epoch seconds (double precision) so that both dialects store and compare them alike.
Documents are JSON (JSONB on PostgreSQL, so they can be indexed later).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time: sa.Double[float] = sa.Double()

objects = sa.Table(
    "objects",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("doc", Json, nullable=False),
    sa.Column("etag", sa.String(64), nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)
"""Every named object as its policy-file document: the draft's policy objects (Tier, IPList,
Service, Rule, Exception, Settings) and the live inventory (Workload, LabelRule, ModeScope)."""

state = sa.Table(
    "state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("active_version", sa.Integer, nullable=False),
    sa.Column("inventory_generation", sa.BigInteger, nullable=False),
)
"""One row (id 1): what every replica compares to know whether its compiled engine is current."""

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("rollback_of", sa.Integer, nullable=True),
    sa.Column("documents", Json, nullable=False),
    sa.Column("changes", Json, nullable=False),
)
"""Provisioned policy versions: immutable, numbered 1, 2, 3, ... without gaps."""

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("details", Json, nullable=False),
)
"""Append-only (a trigger refuses UPDATE and DELETE): who did what, when, with the diff."""

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("owner", sa.String(200), nullable=False, server_default=""),
)
"""`owner` is the person (or system) holding the token; four-eyes compares owners, not tokens."""

enrollment_tokens = sa.Table(
    "enrollment_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("labels", Json, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("reusable", sa.Boolean, nullable=False),
    sa.Column("uses", sa.Integer, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("workloads", Json, nullable=False, server_default="[]"),
    sa.Column("address_ranges", Json, nullable=False, server_default="[]"),
)
"""`workloads`: names of existing workloads an enrollment with this token may adopt (an admin's
binding); `address_ranges`: CIDRs its agents may claim addresses in (empty: any address no other
workload holds)."""

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workload", sa.String(300), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("enrolled_at", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Column("online", sa.Boolean, nullable=False),
    sa.Column("inventory", Json, nullable=False),
    sa.Column("applied_hash", sa.String(80), nullable=True),
    sa.Column("dataplane", sa.String(32), nullable=True),
    sa.Column("errors", Json, nullable=False),
    sa.Column("warnings", Json, nullable=False, server_default="[]"),
    sa.Column("tampered", sa.Boolean, nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("enrollment_token", sa.String(32), nullable=True),
)

flow_batches = sa.Table(
    "flow_batches",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("agent_id", sa.String(32), nullable=False),
    sa.Column("batch_id", sa.String(100), nullable=False),
    sa.Column("workload", sa.String(300), nullable=False),
    sa.Column("received_at", Time, nullable=False),
    sa.Column("first_seen", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("blocked", sa.Integer, nullable=False),
    sa.Column("would_block", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("agent_id", "batch_id", name="uq_flow_batches_agent_batch"),
    sa.Index("ix_flow_batches_workload", "workload", "last_seen"),
    sa.Index("ix_flow_batches_last_seen", "last_seen"),
)
"""Flow summaries as agents report them, one row per batch: the records as a JSON array, with the
columns queries narrow batches by. A batch id seen twice for one agent is stored once."""

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("workload", sa.String(300), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", Json, nullable=False),
    sa.Index("ix_events_at", "at"),
)
"""Tamper, blocked, would-block, agent offline and agent failed events."""

flow_summaries = sa.Table(
    "flow_summaries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("bucket", Time, nullable=False),
    sa.Column("reporter", sa.String(300), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("src", sa.String(64), nullable=False),
    sa.Column("dst", sa.String(64), nullable=False),
    sa.Column("dport", sa.Integer, nullable=False),
    sa.Column("proto", sa.String(8), nullable=False),
    sa.Column("process", sa.String(300), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("first_seen", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Column("connections", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("packets", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "bucket",
        "reporter",
        "direction",
        "src",
        "dst",
        "dport",
        "proto",
        "process",
        "verdict",
        "rule",
        name="uq_flow_summaries_key",
    ),
    sa.Index("ix_flow_summaries_last_seen", "last_seen"),
    sa.Index("ix_flow_summaries_dport", "dport", "last_seen"),
)
"""Flow records summed per hour bucket and key (reporter, direction, src, dst, port, protocol,
process, verdict, rule). The key columns are NOT NULL, with -1 / '' for "none", because a unique
key treats NULLs as distinct on both dialects and the ingest upsert would never find its row."""

rule_counters = sa.Table(
    "rule_counters",
    metadata,
    sa.Column("workload", sa.String(300), primary_key=True),
    sa.Column("rule", sa.String(520), primary_key=True),
    sa.Column("epoch", sa.String(64), nullable=False),
    sa.Column("reported_packets", sa.BigInteger, nullable=False),
    sa.Column("reported_bytes", sa.BigInteger, nullable=False),
    sa.Column("packets", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("last_hit", Time, nullable=True),
    sa.Column("updated_at", Time, nullable=False),
)
"""Per workload and rule: the totals its agent last reported (within `epoch`), which the next report
is compared with, and what the server has counted from them in all, with when it last grew."""

rule_counter_hours = sa.Table(
    "rule_counter_hours",
    metadata,
    sa.Column("bucket", Time, primary_key=True),
    sa.Column("workload", sa.String(300), primary_key=True),
    sa.Column("rule", sa.String(520), primary_key=True),
    sa.Column("packets", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("last_hit", Time, nullable=False),
    sa.Index("ix_rule_counter_hours_last_hit", "last_hit"),
)
"""What rule counters grew by, per hour bucket, workload and rule: the time windows of rule hits."""

stream_cursors = sa.Table(
    "stream_cursors",
    metadata,
    sa.Column("sink", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
"""Per SIEM sink and source (events, audit, flows): the id of the last item delivered (flows: the
record id), and the time of its row, so that a restarted streamer resumes where it stopped."""

stream_leases = sa.Table(
    "stream_leases",
    metadata,
    sa.Column("sink", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)
"""Which server process streams to a sink, until when: one replica per sink at a time."""

hook_replays = sa.Table(
    "hook_replays",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("hook", sa.String(200), nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Index("ix_hook_replays_expires_at", "expires_at"),
)
"""Signed webhook calls already accepted (SHA-256 of the signature), until their timestamp can no
longer pass the freshness check: shared by replicas and kept across restarts."""

applied_objects = sa.Table(
    "applied_objects",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("apply_set", sa.String(200), nullable=False),
    sa.Column("fields", Json, nullable=False),
    sa.Column("applied_at", Time, nullable=False),
    sa.Column("applied_by", sa.String(200), nullable=False),
    sa.Index("ix_applied_objects_apply_set", "apply_set"),
)
"""Which apply set (`microseg apply --set`) manages an object, and which of its fields the set's
files declared last time (for workloads: label keys, attribute keys, addresses, spec keys): what
`apply --prune` may delete and what a later apply may remove. At most one set per object."""

workload_addresses = sa.Table(
    "workload_addresses",
    metadata,
    sa.Column("workload", sa.String(300), primary_key=True),
    sa.Column("network", sa.String(64), primary_key=True),
    sa.Column("version", sa.SmallInteger, nullable=False),
    sa.Column("is_host", sa.Boolean, nullable=False),
    sa.Column("low", sa.LargeBinary(16), nullable=False),
    sa.Column("high", sa.LargeBinary(16), nullable=False),
    sa.Index("ix_workload_addresses_range", "is_host", "version", "low"),
)
"""Each stored workload's addresses as ranges (`low`..`high`: the first and last address, 16
bytes big-endian, so both dialects compare them bytewise), written with the workload by
`objects.put`: who holds an address is an indexed read, not a scan of every workload."""

workload_names = sa.Table(
    "workload_names",
    metadata,
    sa.Column("folded", sa.String(300), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
)
"""Each stored workload's name and its lower-case form, written with the workload by
`objects.put`: a name in another case (enrollment refuses a hostname spelled so) is an indexed
read. A table rather than an index on lower(name): SQLite cannot reflect expression indexes."""
