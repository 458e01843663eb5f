"""SQLAlchemy declarative models: the central catalog of runs, tasks, artifacts and events.

Ids are caller-generated strings (uuid4 hex) so the engine never waits for the database to
learn an id, and timestamps are float unix seconds: cheap to produce, compare and ship as JSON.
The hand-written migration ``migrations/versions/0001_initial.py`` must match these models;
``tests/test_db.py`` checks that with Alembic's autogenerate comparison.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(32)


class Base(DeclarativeBase):
    """Declarative base; ``Base.metadata`` is Alembic's target metadata."""


class Run(Base):
    """One execution of a flow."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    flow_name: Mapped[str] = mapped_column(String(255))
    flow_version: Mapped[str] = mapped_column(String(64))
    flow_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[Any] = mapped_column(JSON)
    params: Mapped[Any] = mapped_column(JSON)
    # running | success | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Task(Base):
    """One execution of a tool on one node for one step (round, iteration, attempt)."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_run_id", "run_id"),
        Index("ix_tasks_cache_key", "cache_key"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(255))
    tool: Mapped[str] = mapped_column(String(255))
    tool_version: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(255), default="local", server_default="local")
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    iteration: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    state: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # {message, type, traceback, context}
    error: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    # latest value per metric name
    metrics: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Transition(Base):
    """One lifecycle transition of a task (the event log behind ``tasks.state``)."""

    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_task_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ID)
    run_id: Mapped[str] = mapped_column(ID)
    src: Mapped[str] = mapped_column(String(16))
    dst: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class Artifact(Base):
    """A named, versioned, content-hashed output with its producer."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
        Index("ix_artifacts_hash", "hash"),
        Index("ix_artifacts_name", "name"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    # json | numpy | pandas | bytes | file | model | pickle
    kind: Mapped[str] = mapped_column(String(16))
    type_name: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(ID)
    task_id: Mapped[str] = mapped_column(ID)
    step: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    shareable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    pickled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[float] = mapped_column(Float)
    meta: Mapped[Any | None] = mapped_column(JSON, nullable=True)


class ArtifactParent(Base):
    """Lineage edge: ``artifact_id`` was derived from ``parent_id``.

    ``parent_id`` has no foreign key on purpose: lineage must survive the garbage collection
    of an ancestor, which then shows up as a missing node instead of blocking the delete.
    """

    __tablename__ = "artifact_parents"

    artifact_id: Mapped[str] = mapped_column(
        ID, ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    parent_id: Mapped[str] = mapped_column(ID, primary_key=True)


class RunArtifact(Base):
    """Every artifact a run produced or (through a cache hit) reused."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ID, primary_key=True)
    task_id: Mapped[str] = mapped_column(ID)
    output: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Log(Base):
    """A log line emitted by a task."""

    __tablename__ = "logs"
    __table_args__ = (Index("ix_logs_task_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID)
    task_id: Mapped[str] = mapped_column(ID)
    ts: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class Metric(Base):
    """One metric sample reported by a task."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_task_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID)
    task_id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ts: Mapped[float] = mapped_column(Float)


class CacheEntry(Base):
    """A finished task's outputs keyed by its cache key."""

    __tablename__ = "cache_entries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tool: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(ID)
    task_id: Mapped[str] = mapped_column(ID)
    # {output_name: artifact_id}
    outputs: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)


_t = Base.metadata.tables
# Core Table objects: the writer and the queries use Core, not the ORM, for speed.
runs = _t["runs"]
tasks = _t["tasks"]
transitions = _t["transitions"]
artifacts = _t["artifacts"]
artifact_parents = _t["artifact_parents"]
run_artifacts = _t["run_artifacts"]
logs = _t["logs"]
metrics = _t["metrics"]
cache_entries = _t["cache_entries"]
