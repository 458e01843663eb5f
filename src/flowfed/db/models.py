"""SQLAlchemy Core tables: the central catalog of runs, tasks, artifacts and events.

Ids are caller-generated strings (uuid4 hex) so the engine never waits for the database to
learn an id, and timestamps are float unix seconds: cheap to produce, compare and ship as JSON.
The hand-written migration ``migrations/versions/0001_initial.py`` must match these tables;
``tests/test_db.py`` checks that with Alembic's autogenerate comparison. A new SQLite catalog
is created from ``schema_sqlite.sql``, these tables' DDL precompiled: after a change here,
regenerate it with ``python -m flowfed.db --write-sqlite-ddl`` (a test fails until then).

The writer and the queries use Core, not the ORM, for speed; plain :class:`~sqlalchemy.Table`
objects also keep ``sqlalchemy.orm`` (and the class building of declarative models) out of
the CLI's start-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)

ID = String(32)

metadata = MetaData()
"""Every flowfed table; Alembic's target metadata."""

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("flow_name", String(255), nullable=False),
    Column("flow_version", String(64), nullable=False),
    Column("flow_file", Text, nullable=True),
    Column("spec", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    # running | success | failed | cancelled
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    # the server process executing the run, and until when its claim holds: a run whose
    # lease ran out (its server died) is claimed and resumed by another (NULL: CLI runs)
    Column("owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    # who submitted it (a token's name, ``local:<user>`` for the CLI, ``trigger:<name>``):
    # forwarded with every placed task, whose node's policy checks it
    Column("principal", String(255), nullable=True),
    # the run this one retries (``POST /runs/{id}/retry``), and the trigger that started it
    Column("retry_of", ID, nullable=True),
    Column("trigger", String(255), nullable=True),
)
"""One execution of a flow."""

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", String(255), nullable=False),
    Column("tool", String(255), nullable=False),
    Column("tool_version", String(64), nullable=False),
    # the tool's effective code hash (flowfed.artifacts.codehash), beside its declared version
    Column("code_hash", String(64), nullable=True),
    Column("node", String(255), nullable=False, default="local", server_default="local"),
    Column("round", Integer, nullable=True),
    Column("plan_key", String(512), nullable=True),
    Column("dataset", String(255), nullable=True),
    Column("variant", JSON, nullable=True),
    Column("iteration", Integer, nullable=False, default=1, server_default="1"),
    Column("attempt", Integer, nullable=False, default=1, server_default="1"),
    Column("state", String(16), nullable=False),
    Column("cache_key", String(64), nullable=True),
    Column("cached", Boolean, nullable=False, default=False, server_default=false()),
    # {message, type, traceback, context}
    Column("error", JSON, nullable=True),
    # latest value per metric name
    Column("metrics", JSON, nullable=True),
    Column("progress", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    # the task in words for the monitors: "Local model training (hospital-a)"
    Column("label", String(255), nullable=True),
    # this attempt's {wall_s, cpu_s, peak_rss_mb, progress: {done, total, unit}} (live while
    # it runs), and each earlier attempt's [{attempt, ...}]
    Column("resources", JSON, nullable=True),
    Column("attempt_resources", JSON, nullable=True),
    Index("ix_tasks_run_id", "run_id"),
    Index("ix_tasks_cache_key", "cache_key"),
)
"""One execution of a tool on one node for one step (round, iteration, attempt)."""

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("run_id", ID, nullable=False),
    Column("src", String(16), nullable=False),
    Column("dst", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=1, server_default="1"),
    Column("detail", Text, nullable=True),
    Index("ix_transitions_task_id", "task_id"),
)
"""One lifecycle transition of a task (the event log behind ``tasks.state``)."""

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    # json | numpy | pandas | bytes | file | model | pickle
    Column("kind", String(16), nullable=False),
    Column("type_name", String(255), nullable=False),
    Column("uri", Text, nullable=False),
    Column("run_id", ID, nullable=False),
    Column("task_id", ID, nullable=False),
    Column("step", String(255), nullable=False),
    Column("node", String(255), nullable=False),
    Column("shareable", Boolean, nullable=False, default=True, server_default=true()),
    Column("pickled", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", Float, nullable=False),
    Column("meta", JSON, nullable=True),
    UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
    Index("ix_artifacts_hash", "hash"),
    Index("ix_artifacts_name", "name"),
)
"""A named, versioned, content-hashed output with its producer."""

artifact_parents = Table(
    "artifact_parents",
    metadata,
    Column("artifact_id", ID, ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True),
    # No foreign key on purpose: lineage must survive the garbage collection of an ancestor,
    # which then shows up as a missing node instead of blocking the delete.
    Column("parent_id", ID, primary_key=True),
)
"""Lineage edge: ``artifact_id`` was derived from ``parent_id``."""

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", ID, primary_key=True),
    Column("artifact_id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("output", String(255), nullable=True),
    Column("reused", Boolean, nullable=False, default=False, server_default=false()),
)
"""Every artifact a run produced or (through a cache hit) reused."""

logs = Table(
    "logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False),
    Column("task_id", ID, nullable=False),
    Column("ts", Float, nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_logs_task_id", "task_id"),
)
"""A log line emitted by a task."""

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False),
    Column("task_id", ID, nullable=False),
    Column("name", String(255), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", Integer, nullable=True),
    Column("ts", Float, nullable=False),
    Index("ix_metrics_task_id", "task_id"),
)
"""One metric sample reported by a task."""

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("tool", String(255), nullable=False),
    Column("run_id", ID, nullable=False),
    Column("task_id", ID, nullable=False),
    # {output_name: artifact_id}
    Column("outputs", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""A finished task's outputs keyed by its cache key."""

blobs = Table(
    "blobs",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)
"""Small artifact objects kept in the catalog itself, by content hash.

Writing a file per small output costs more than everything else a task does; bytes up to
``flowfed.artifacts.INLINE_MAX_BYTES`` are committed here, in the same transaction as the
artifact rows that name them. Larger objects go to the artifact store.
"""

flows = Table(
    "flows",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    # the validated flow model (flowfed.spec.Flow) as JSON
    Column("spec", JSON, nullable=False),
    # the text it was submitted as (YAML or JSON), kept for display and editing
    Column("source", Text, nullable=True),
    Column("format", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("name", "version", name="uq_flows_name_version"),
    Index("ix_flows_name", "name"),
)
"""Stored flow definitions: every save of a name is a new version (1, 2, ...)."""

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    # sha256 of the secret; the secret itself is shown once and never stored
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)
"""User API tokens (bearer credentials for the REST and WebSocket APIs)."""

oauth_clients = Table(
    "oauth_clients",
    metadata,
    # shown to clients as ``ffc_<id>``
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    # node or tool
    Column("role", String(16), nullable=False),
    # space-separated scopes the client may ask for (node:<name>, task:<id>)
    Column("scope", Text, nullable=False),
    # sha256 of the client secret; the secret itself is shown once and never stored
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)
"""OAuth2 clients (nodes and tools) that obtain access tokens with client credentials."""

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    # base64url of the key bytes
    Column("secret", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""The key the servers sign access tokens with when none is configured (one row, shared)."""

events = Table(
    "events",
    metadata,
    Column("run_id", ID, primary_key=True),
    # per-run sequence number: the event id clients resume from
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("task_id", ID, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("ts", Float, nullable=False),
)
"""Every event of a run in order: what the live stream replays to late or returning clients."""

triggers = Table(
    "triggers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    # cron | interval | event | condition
    Column("kind", String(16), nullable=False),
    # the validated definition (flowfed.server.triggers.model.TriggerSpec) as JSON
    Column("spec", JSON, nullable=False),
    Column("flow_name", String(255), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # schedules: the clock time up to which ticks were looked at; events: the source
    # timestamp up to which events were scanned (minus a slack window, see the service)
    Column("watermark", Float, nullable=False),
    # event triggers: events with a source timestamp before this are never theirs
    Column("event_since", Float, nullable=False),
    Column("last_fired_at", Float, nullable=True),
    Column("last_run_id", ID, nullable=True),
    UniqueConstraint("name", name="uq_triggers_name"),
)
"""Triggers: flows that start themselves on a schedule, an event or a condition."""

trigger_fires = Table(
    "trigger_fires",
    metadata,
    Column("id", ID, primary_key=True),
    Column("trigger_id", ID, ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False),
    # what fired: "tick:<UTC ISO time>" or "<source>:<id>"; unique per trigger, so inserting
    # the row IS the claim: of two servers handling one tick only one inserts it
    Column("fire_key", String(255), nullable=False),
    # claimed | started | skipped | queued | failed
    Column("status", String(16), nullable=False),
    Column("run_id", ID, nullable=True),
    Column("reason", Text, nullable=True),
    # the event payload (or {"tick": ..., "catchup": ...} for schedules)
    Column("event", JSON, nullable=False),
    Column("params", JSON, nullable=True),
    Column("catchup", Boolean, nullable=False, default=False, server_default=false()),
    Column("scheduled_for", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("trigger_id", "fire_key", name="uq_trigger_fires_key"),
    Index("ix_trigger_fires_trigger_id", "trigger_id"),
)
"""One firing of a trigger: the run it started, or why it started none."""

platform_events = Table(
    "platform_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("ts", Float, nullable=False),
    Index("ix_platform_events_ts", "ts"),
)
"""Server-wide events any part of the server records (``flowfed.db.platform_events``),
e.g. ``node.dataset_changed``; the trigger service polls them."""
nodes = Table(
    "nodes",
    metadata,
    Column("name", String(255), primary_key=True),
    # sha256 of the node token's secret; the token is shown once (`flowfed nodes add`)
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
    # what the node registered: [{name, format, rows, columns: [{name, dtype}], hash}]
    Column("datasets", JSON, nullable=False),
    # online | offline
    Column("status", String(16), nullable=False),
)
"""Data nodes: their credentials and the datasets they last registered (never rows)."""

node_dataset_changes = Table(
    "node_dataset_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(255), nullable=False, index=True),
    Column("dataset", String(255), nullable=False),
    # None when the dataset is new
    Column("old_hash", String(64), nullable=True),
    Column("new_hash", String(64), nullable=False),
    Column("ts", Float, nullable=False),
)
"""Every change of a node dataset's content hash seen at registration (triggers read it)."""


def registered(t: Any) -> Any:
    """Whether an artifact's producing task (``t``, outer-joined) makes it one of a run's
    results rather than a step on the way: made outside federated rounds, or the global
    model of its federated step's last aggregated round. Node updates and earlier rounds'
    global models stay artifacts, out of the model registry (issue 22, part 9).
    """
    from sqlalchemy import and_, func, or_, select

    last = tasks.alias("last_round")
    last_round = (
        select(func.max(last.c.round))
        .where(
            last.c.run_id == t.c.run_id,
            last.c.step == t.c.step,
            last.c.plan_key.like("%/aggregate"),
            last.c.state.in_(("finished", "cached")),
        )
        .scalar_subquery()
    )
    return or_(
        t.c.id.is_(None),
        t.c.round.is_(None),
        and_(t.c.plan_key.like("%/aggregate"), t.c.round == last_round),
    )
