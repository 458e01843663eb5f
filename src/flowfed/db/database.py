"""The :class:`Database` facade: engine set-up, schema checks and read queries.

Reads use SQLAlchemy Core and return plain JSON-able dicts (what the CLI and the REST API
ship). Writes go through :class:`flowfed.db.writer.Writer`, a background thread, so the
engine's hot path never waits on the database.

Longer than 600 lines on purpose: it is the one read API the CLI, the server and the
engine share (runs, artifacts and lineage, leases, logs), and each query is short; the
cache's queries live with the cache (:mod:`flowfed.engine.cache`) and a resumed run's
with the resume (:mod:`flowfed.engine.resume`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3  # noqa: F401  (the DBAPI of the sqlite dialect imported below)
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, func, select, text, update

# create_engine("sqlite:...") would import the SQLite dialect and its DBAPI (sqlite3) on
# first use: ~7 ms inside the first Database() of every run. Loaded here, with the rest of
# SQLAlchemy, opening or creating a catalog stays cheap; a process that only talks to
# PostgreSQL pays it once at import. (After `from sqlalchemy import`: importing this module
# first, while SQLAlchemy itself is still loading, measured a few ms slower.)
from sqlalchemy.dialects.sqlite import pysqlite  # noqa: F401
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from flowfed.db import models as m
from flowfed.db.schema import (
    HEAD_REVISION,
    SchemaOutOfDate,
    alembic_config,
    create_from_template,
    sqlite_ddl_statements,
)
from flowfed.db.writer import Writer

#: Minimum length of an id prefix accepted as a reference (shorter is too ambiguous).
MIN_PREFIX = 4

# Arbitrary constant key for pg_advisory_xact_lock: serializes concurrent `upgrade()` calls
# from several processes so only one of them runs the migrations.
_UPGRADE_LOCK_KEY = 0x666C6F77666564

_VERSION_REF = re.compile(r"^(?P<name>.+)[:@](?P<version>\d+)$")


class AmbiguousRef(LookupError):
    """An id prefix matched more than one row."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.ref = ref
        self.candidates = candidates
        super().__init__(
            f"reference {ref!r} is ambiguous; it matches {', '.join(candidates)}; "
            "give more characters"
        )


def default_database_url(home: Path | None = None) -> str:
    """``$FLOWFED_DATABASE_URL`` if set, else SQLite at ``<home or .flowfed>/flowfed.db``."""
    env = os.environ.get("FLOWFED_DATABASE_URL")
    if env:
        return env
    root = Path(home) if home is not None else Path(".flowfed")
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root.resolve() / 'flowfed.db'}"


def normalize_url(url: str) -> str:
    """Route PostgreSQL URLs to the psycopg 3 driver (SQLAlchemy defaults to psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_engine(url: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        # One shared connection, otherwise every thread (the writer!) sees its own empty DB.
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) control BEGIN instead of pysqlite's
        # implicit transactions, which break transactional DDL and BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: durable across application crashes, fsync only at checkpoints.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that reads (max
        # version) and then writes can fail with SQLITE_BUSY when another process wrote in
        # between, and busy_timeout cannot help with that upgrade.
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


#: What SQLite keeps next to a catalog file: its write-ahead log, the WAL index and the
#: rollback journal. SQLite gives them the mode of the catalog file itself.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite_files(path: Path, *, create: bool = True) -> None:
    """Make the catalog ``path`` and its side files readable by their owner only (0600).

    A catalog holds run parameters, logs, small artifacts and credential hashes, and
    other local users have no business reading them. An existing file keeps its content
    and loses the group and other bits; with ``create`` a missing catalog is created empty
    with 0600 (an empty file is an empty SQLite database), so SQLite never creates it
    with its 0644.
    The WAL and shared-memory files SQLite creates later copy the catalog's mode. Files
    of another owner are left as they are (the chmod would fail; the open reports it).

    Example:
        >>> import stat, tempfile
        >>> target = Path(tempfile.mkdtemp()) / "flowfed.db"
        >>> private_sqlite_files(target)
        >>> oct(stat.S_IMODE(target.stat().st_mode))
        '0o600'
    """
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError:
            return  # no such directory, read-only file system: SQLite's open reports it
    for name in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        try:
            mode = name.stat().st_mode
            if mode & 0o077:
                name.chmod(mode & 0o7700)
        except OSError:
            continue  # absent, or not ours to change


def _rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


class Database:
    """A flowfed catalog database (SQLite file by default, PostgreSQL in production)."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        """``pool_size``: connections kept open to a server database (PostgreSQL), as
        many again allowed on top under load (SQLAlchemy's default: 5, and 10 on top)."""
        self.url = normalize_url(url)
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url)
            path = self.sqlite_path()
            if path is not None:
                self._private_files(path)
        elif pool_size is not None:
            self.engine = create_engine(
                self.url, pool_pre_ping=False, pool_size=pool_size, max_overflow=pool_size
            )
        else:
            self.engine = create_engine(self.url, pool_pre_ping=False)
        self._writers: list[Writer] = []

    def _private_files(self, path: Path) -> None:
        # Files left 0644 by an older flowfed are tightened now; a catalog SQLite would
        # create on the first connection is created 0600 just before it (not here: a new
        # catalog is a copy of the packaged template, made 0600, when the path is free).
        private_sqlite_files(path, create=False)

        @event.listens_for(self.engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            if not path.exists():
                private_sqlite_files(path)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- schema ---------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision stored in ``alembic_version`` (None if there is none)."""
        # Connecting is outside the try: a database that cannot be reached (or does not
        # exist) is that error, not an "empty database" to upgrade.
        with self.engine.connect() as conn:
            try:
                # exec_driver_sql: nothing to compile, on the path of every run.
                row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
            except DBAPIError:
                # No alembic_version table: an empty (or foreign) database.
                return None
        return None if row is None else str(row[0])

    def ensure_schema(self, auto_upgrade: bool = True) -> None:
        """Make sure the schema is at :data:`HEAD_REVISION`, upgrading if allowed.

        A SQLite catalog file that does not exist yet starts as a copy of the packaged
        empty catalog (:func:`flowfed.db.schema.create_from_template`), already at the
        head revision; if that copy cannot be made, :meth:`upgrade` creates the schema.
        """
        if auto_upgrade:
            path = self.sqlite_path()
            if path is not None:
                create_from_template(path)
        found = self.current_revision()
        if found == HEAD_REVISION:
            return
        if not auto_upgrade:
            raise SchemaOutOfDate(found)
        self.upgrade()

    def sqlite_path(self) -> Path | None:
        """The file of a SQLite catalog; None for PostgreSQL and in-memory databases.

        Example:
            >>> Database("sqlite:///home/flowfed.db").sqlite_path()
            PosixPath('home/flowfed.db')
            >>> Database("sqlite://").sqlite_path() is None
            True
        """
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.query:
            return None  # URI options such as mode=memory: let SQLite interpret them
        name = url.database
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return Path(name)

    def upgrade(self, *, migrate: bool = False) -> None:
        """Run ``alembic upgrade head`` on this database.

        An empty database gets the newest schema created directly from the table metadata
        (on SQLite from ``schema_sqlite.sql``, the same DDL precompiled) and stamped with
        :data:`HEAD_REVISION` (what the migrations would produce; tests check they agree),
        which spares a first ``flowfed run`` the cost of Alembic.
        ``migrate=True`` always goes through the migrations.
        """
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
                if not migrate and self._is_empty(conn):
                    if conn.dialect.name == "sqlite":
                        # The statements create_all would compile (~7 ms of SQLAlchemy per
                        # new catalog), precompiled; tests/test_db.py keeps them equal.
                        for ddl in sqlite_ddl_statements():
                            conn.exec_driver_sql(ddl)
                    else:
                        m.metadata.create_all(conn)
                    conn.execute(
                        text(
                            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                        )
                    )
                    conn.execute(
                        text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                        {"v": HEAD_REVISION},
                    )
                    return
                self._alembic_upgrade(conn)

    @staticmethod
    def _is_empty(conn: Connection) -> bool:
        if conn.dialect.name == "sqlite":
            # The question inspect().get_table_names() answers (with the same filter for
            # SQLite's own sqlite_* tables), asked directly: no Inspector to build.
            n = conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
            ).scalar_one()
            return n == 0
        from sqlalchemy import inspect

        return not inspect(conn).get_table_names()

    def _alembic_upgrade(self, conn: Connection) -> None:
        from alembic import command
        from alembic.util.exc import CommandError

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:
            # Typically a revision newer than this flowfed knows (a newer version migrated
            # the database): say so instead of an Alembic internals error.
            raise SchemaOutOfDate(self.current_revision_in(conn), unknown=True) from exc

    @staticmethod
    def current_revision_in(conn: Connection) -> str | None:
        """The revision as seen by an open connection (inside its transaction)."""
        try:
            with conn.begin_nested():
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except DBAPIError:
            return None
        return None if row is None else str(row[0])

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE).

        A deferred transaction that reads and then writes fails at once with "database is
        locked" when another connection writes meanwhile (busy_timeout cannot wait for a
        lock upgrade); taking the lock first makes it wait its turn instead.
        """
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def writer(self, on_commit: Callable[[list[dict[str, Any]]], None] | None = None) -> Writer:
        """A new background :class:`Writer`; closed by :meth:`close` if still open.

        ``on_commit`` receives the run events of every committed batch (in order).
        """
        w = Writer(self.engine, on_commit)
        self._writers = [x for x in self._writers if not x.closed]
        self._writers.append(w)
        return w

    def close(self) -> None:
        """Close open writers (flushing them) and release every pooled connection."""
        writers, self._writers = self._writers, []
        try:
            for w in writers:
                w.close()
        finally:
            self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent runs, newest first (without their spec)."""
        cols = [c for c in m.runs.c if c.name != "spec"]
        q = select(*cols).order_by(m.runs.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def _resolve_id(self, conn: Connection, table: Any, ref: str) -> str | None:
        """Exact id, else a unique id prefix of at least :data:`MIN_PREFIX` characters."""
        idc = table.c.id
        if conn.execute(select(idc).where(idc == ref)).first() is not None:
            return ref
        if len(ref) < MIN_PREFIX:
            return None
        found = [
            r[0]
            for r in conn.execute(select(idc).where(idc.startswith(ref, autoescape=True)).limit(5))
        ]
        if len(found) > 1:
            raise AmbiguousRef(ref, found)
        return found[0] if found else None

    def get_run(self, ref: str) -> dict[str, Any] | None:
        """A run by id or unique id prefix, with its tasks and their transitions."""
        with self.engine.connect() as conn:
            run_id = self._resolve_id(conn, m.runs, ref)
            if run_id is None:
                return None
            row = conn.execute(select(m.runs).where(m.runs.c.id == run_id)).first()
            if row is None:
                return None
            run = dict(row._mapping)
            tasks = _rows(
                conn.execute(
                    select(m.tasks)
                    .where(m.tasks.c.run_id == run_id)
                    .order_by(m.tasks.c.created_at, m.tasks.c.id)
                )
            )
            by_task: dict[str, list[dict[str, Any]]] = {t["id"]: [] for t in tasks}
            for tr in conn.execute(
                select(m.transitions)
                .where(m.transitions.c.run_id == run_id)
                .order_by(m.transitions.c.id)
            ):
                d = dict(tr._mapping)
                by_task.setdefault(d["task_id"], []).append(d)
            for t in tasks:
                t["transitions"] = by_task[t["id"]]
            run["tasks"] = tasks
            return run

    # -- artifacts ------------------------------------------------------------------------

    @staticmethod
    def artifact_dicts(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Artifact rows by id, each with ``parents`` and ``producer``, in two queries."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        a, t = m.artifacts, m.tasks
        q = (
            select(
                a,
                t.c.tool.label("_tool"),
                t.c.tool_version.label("_tool_version"),
                t.c.code_hash.label("_code_hash"),
            )
            .select_from(a.outerjoin(t, t.c.id == a.c.task_id))
            .where(a.c.id.in_(ids))
        )
        out: dict[str, dict[str, Any]] = {}
        for r in conn.execute(q):
            d = dict(r._mapping)
            tool, tool_version = d.pop("_tool"), d.pop("_tool_version")
            code_hash = d.pop("_code_hash")
            d["parents"] = []
            d["producer"] = {
                "task_id": d["task_id"],
                "step": d["step"],
                "tool": tool,
                "tool_version": tool_version,
                "code_hash": code_hash,
                "run_id": d["run_id"],
            }
            out[d["id"]] = d
        if out:
            p = m.artifact_parents
            for aid, pid in conn.execute(
                select(p.c.artifact_id, p.c.parent_id)
                .where(p.c.artifact_id.in_(list(out)))
                .order_by(p.c.artifact_id, p.c.parent_id)
            ):
                out[aid]["parents"].append(pid)
        return out

    def _resolve_artifact(self, conn: Connection, ref: str) -> str | None:
        a = m.artifacts
        if conn.execute(select(a.c.id).where(a.c.id == ref)).first() is not None:
            return ref
        mt = _VERSION_REF.match(ref)
        if mt is not None:
            row = conn.execute(
                select(a.c.id).where(a.c.name == mt["name"], a.c.version == int(mt["version"]))
            ).first()
            if row is not None:
                return str(row[0])
        row = conn.execute(
            select(a.c.id).where(a.c.name == ref).order_by(a.c.version.desc()).limit(1)
        ).first()
        if row is not None:
            return str(row[0])
        return self._resolve_id(conn, a, ref)

    def get_artifact(self, ref: str) -> dict[str, Any] | None:
        """An artifact by id, id prefix, ``name`` (latest), ``name:version`` or ``name@version``."""
        with self.engine.connect() as conn:
            aid = self._resolve_artifact(conn, ref)
            if aid is None:
                return None
            return self.artifact_dicts(conn, [aid]).get(aid)

    def list_artifacts(
        self,
        name: str | None = None,
        run_id: str | None = None,
        limit: int = 200,
        *,
        prefix: str | None = None,
        step: str | None = None,
        include_rounds: bool = True,
    ) -> list[dict[str, Any]]:
        """Artifact rows (no parents/producer), newest first, optionally filtered.

        ``prefix`` matches names that start with it (``scores`` finds
        ``scores[hospital-a:breast]``); ``include_rounds=False`` leaves out what federated
        rounds made (node updates, every round's global model but the last).
        """
        a = m.artifacts
        q = select(a).order_by(a.c.created_at.desc(), a.c.version.desc()).limit(limit)
        if name is not None:
            q = q.where(a.c.name == name)
        if prefix:
            q = q.where(a.c.name.startswith(prefix, autoescape=True))
        if run_id is not None:
            q = q.where(a.c.run_id == run_id)
        if step is not None:
            q = q.where(a.c.step == step)
        if not include_rounds:
            t = m.tasks
            q = q.select_from(a.outerjoin(t, t.c.id == a.c.task_id)).where(m.registered(t))
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def lineage(self, ref: str) -> dict[str, Any] | None:
        """The recursive lineage tree of an artifact: its dict with ``parents`` as subtrees.

        Ancestors are fetched level by level (two queries per generation); the tree is then
        built in memory. A node already on the current path is emitted once more with
        ``"cycle": True`` and not expanded; a parent missing from the catalog (garbage
        collected) appears as ``{"id": ..., "missing": True, "parents": []}``.
        """
        with self.engine.connect() as conn:
            root = self._resolve_artifact(conn, ref)
            if root is None:
                return None
            nodes: dict[str, dict[str, Any]] = {}
            frontier = [root]
            while frontier:
                got = self.artifact_dicts(conn, frontier)
                nodes.update(got)
                frontier = list({p for d in got.values() for p in d["parents"] if p not in nodes})
        if root not in nodes:
            return None

        # A DAG drawn as a tree repeats shared ancestors; federated rounds share them at
        # every level (round r's global model is a parent of the global model and of each
        # update of round r+1), so a tree would grow exponentially. Each ancestor is
        # expanded once; later occurrences are stubs marked "shown".
        expanded: set[str] = set()

        def build(aid: str, path: frozenset[str]) -> dict[str, Any]:
            base = nodes.get(aid)
            if base is None:
                return {"id": aid, "missing": True, "parents": []}
            node = {k: v for k, v in base.items() if k != "parents"}
            if aid in path:
                node["cycle"] = True
                node["parents"] = []
                return node
            if aid in expanded:
                node["shown"] = True
                node["parents"] = []
                return node
            expanded.add(aid)
            inner = path | {aid}
            node["parents"] = [build(p, inner) for p in base["parents"]]
            return node

        return build(root, frozenset())

    def run_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """Artifacts a run produced or reused (``reused``/``output`` added), by name."""
        a, ra = m.artifacts, m.run_artifacts
        q = (
            select(a, ra.c.reused, ra.c.output)
            .select_from(ra.join(a, a.c.id == ra.c.artifact_id))
            .where(ra.c.run_id == run_id)
            .order_by(a.c.name, a.c.version)
        )
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    # -- leases and resumption (server processes) ----------------------------------------

    def claim_runs(self, owner: str, lease_s: float, now: float | None = None) -> list[str]:
        """Claim every server run whose lease ran out; the ids this caller now owns.

        One conditional UPDATE per run: when two servers race for the same run, the
        database lets exactly one of them change the row, so no run (and no task of it)
        is ever executed by two processes. Runs with no owner (started by the CLI) are
        never claimed.
        """
        now = time.time() if now is None else now
        r = m.runs
        claimed: list[str] = []
        with self.engine.connect() as conn:
            candidates = [
                row[0]
                for row in conn.execute(
                    select(r.c.id).where(
                        r.c.status == "running",
                        r.c.owner.is_not(None),
                        r.c.lease_until < now,
                    )
                )
            ]
        for run_id in candidates:
            with self.engine.begin() as conn:
                res = conn.execute(
                    update(r)
                    .where(r.c.id == run_id, r.c.status == "running", r.c.lease_until < now)
                    .values(owner=owner, lease_until=now + lease_s)
                )
                if res.rowcount == 1:
                    claimed.append(run_id)
        return claimed

    def renew_leases(self, owner: str, run_ids: Iterable[str], lease_s: float) -> None:
        """Extend this owner's claim on its live runs."""
        ids = list(run_ids)
        if not ids:
            return
        r = m.runs
        with self.engine.begin() as conn:
            conn.execute(
                update(r)
                .where(r.c.id.in_(ids), r.c.owner == owner)
                .values(lease_until=time.time() + lease_s)
            )

    def read_blob(self, hash: str) -> bytes | None:
        """The bytes of a small artifact object kept in the catalog (None if not there)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(m.blobs.c.data).where(m.blobs.c.hash == hash)).first()
        return None if row is None else bytes(row[0])

    def run_events(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A run's recorded events with ``seq > after``, in order."""
        e = m.events
        q = select(e).where(e.c.run_id == run_id, e.c.seq > after).order_by(e.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def task_events(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        """A task's recorded events of one ``kind``, in order."""
        e = m.events
        q = select(e).where(e.c.task_id == task_id, e.c.kind == kind).order_by(e.c.seq)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        """A task's log lines in emission order."""
        q = select(m.logs).where(m.logs.c.task_id == task_id).order_by(m.logs.c.id)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def task_metrics(self, task_id: str) -> list[dict[str, Any]]:
        """A task's metric samples in emission order."""
        q = select(m.metrics).where(m.metrics.c.task_id == task_id).order_by(m.metrics.c.id)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))

    def count(self, table: str) -> int:
        """Number of rows in a catalog table (diagnostics and tests)."""
        t = m.metadata.tables[table]
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    """Slices of at most ``size``: SQLite caps the number of bound parameters per query."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
