"""flowfed.db against real SQLite and PostgreSQL (the db_url fixture runs both)."""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from flowfed.db import (
    HEAD_REVISION,
    AmbiguousRef,
    Database,
    SchemaOutOfDate,
    Writer,
    default_database_url,
    normalize_url,
)
from flowfed.db import models as m


def uid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.ensure_schema()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def writer(db: Database) -> Iterator[Writer]:
    w = db.writer()
    try:
        yield w
    finally:
        w.close()


def new_run(w: Writer, run_id: str | None = None) -> str:
    run_id = run_id or uid()
    w.create_run(
        run_id=run_id,
        flow_name="demo",
        flow_version="1",
        flow_file="flow.yaml",
        spec={"steps": [{"name": "a"}]},
        params={"lr": 0.1},
        created_at=time.time(),
    )
    return run_id


def new_task(w: Writer, run_id: str, step: str = "train", task_id: str | None = None) -> str:
    task_id = task_id or uid()
    w.add_tasks(
        [
            {
                "id": task_id,
                "run_id": run_id,
                "step": step,
                "tool": f"tools.{step}",
                "tool_version": "2",
                "state": "pending",
                "created_at": time.time(),
            }
        ]
    )
    return task_id


def art(
    run_id: str, task_id: str, name: str, parents: list[str] | None = None, output: str = "out"
) -> dict[str, Any]:
    return {
        "id": uid(),
        "name": name,
        "hash": uuid.uuid4().hex * 2,
        "size": 10,
        "kind": "json",
        "type_name": "dict",
        "uri": "file:///x",
        "run_id": run_id,
        "task_id": task_id,
        "step": "train",
        "node": "local",
        "shareable": True,
        "pickled": False,
        "created_at": time.time(),
        "meta": {"k": 1},
        "parents": parents or [],
        "output": output,
    }


def finish(
    w: Writer, run_id: str, task_id: str, artifacts: list[dict[str, Any]], **kw: Any
) -> None:
    args: dict[str, Any] = {
        "state": "finished",
        "at": time.time(),
        "cache_key": None,
        "cached": False,
        "error": None,
        "metrics": None,
        "progress": 1.0,
    }
    args.update(kw)
    w.finish_task(task_id=task_id, run_id=run_id, artifacts=artifacts, **args)


# -- schema -----------------------------------------------------------------------------


def test_head_revision_matches_alembic_scripts() -> None:
    from alembic.script import ScriptDirectory

    from flowfed.db import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_schema_upgrade(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert database.current_revision() is None
        with pytest.raises(SchemaOutOfDate) as info:
            database.ensure_schema(auto_upgrade=False)
        msg = str(info.value)
        assert "empty database" in msg and HEAD_REVISION in msg and "flowfed db upgrade" in msg
        database.ensure_schema()
        assert database.current_revision() == HEAD_REVISION
        database.ensure_schema(auto_upgrade=False)  # fast path, no error
        database.upgrade()  # idempotent
        assert database.current_revision() == HEAD_REVISION
    finally:
        database.close()


def test_migration_matches_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrated = Database(db_url)
    try:
        migrated.upgrade(migrate=True)  # the Alembic scripts, not the empty-database fast path
        assert migrated.current_revision() == HEAD_REVISION
        with migrated.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), m.metadata)
    finally:
        migrated.close()
    assert diff == []


def test_sqlite_ddl_file_matches_models(tmp_path: Path) -> None:
    from flowfed.db.schema import SQLITE_DDL_PATH
    from flowfed.db.sqlite_ddl import (
        WRITE_SQLITE_DDL_COMMAND,
        compile_sqlite_ddl,
        main,
        write_sqlite_ddl,
    )

    compiled = compile_sqlite_ddl()
    assert SQLITE_DDL_PATH.read_text(encoding="utf-8") == compiled, (
        f"{SQLITE_DDL_PATH.name} no longer matches flowfed.db.models; regenerate it with "
        f"`{WRITE_SQLITE_DDL_COMMAND}` and commit it"
    )
    assert main(["--check-sqlite-ddl"]) == 0
    out = tmp_path / "schema.sql"
    assert write_sqlite_ddl(out) and not write_sqlite_ddl(out)
    assert out.read_text(encoding="utf-8") == compiled
    out.write_text(compiled.replace("CREATE INDEX", "CREATE UNIQUE INDEX", 1), encoding="utf-8")
    assert write_sqlite_ddl(out) and out.read_text(encoding="utf-8") == compiled


def test_sqlite_template_holds_the_schema_the_ddl_makes(tmp_path: Path) -> None:
    import gzip
    import sqlite3

    from flowfed.db.schema import SQLITE_TEMPLATE_PATH
    from flowfed.db.sqlite_ddl import (
        WRITE_SQLITE_DDL_COMMAND,
        build_sqlite_template,
        catalog_contents,
        main,
        template_problem,
        write_sqlite_template,
    )

    assert template_problem() is None, (
        f"{SQLITE_TEMPLATE_PATH.name} is stale; regenerate it with "
        f"`{WRITE_SQLITE_DDL_COMMAND}` and commit it"
    )
    held = catalog_contents(gzip.decompress(SQLITE_TEMPLATE_PATH.read_bytes()))
    assert held["alembic_version"] == [HEAD_REVISION] and held["journal_mode"] == "wal"
    assert len(held["objects"]) > 30  # type: ignore[arg-type]
    assert main(["--check-sqlite-ddl"]) == 0

    out = tmp_path / "t.db.gz"
    assert write_sqlite_template(out) and not write_sqlite_template(out)
    # A template stamped with another revision is found out, and rewritten.
    stale = tmp_path / "stale.db"
    stale.write_bytes(gzip.decompress(build_sqlite_template()))
    conn = sqlite3.connect(stale)
    conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.commit()
    conn.close()
    out.write_bytes(gzip.compress(stale.read_bytes()))
    assert "stamped ['0001']" in (template_problem(out) or "")
    assert write_sqlite_template(out) and template_problem(out) is None
    out.write_bytes(b"not gzip")
    assert "cannot be read" in (template_problem(out) or "")


def test_a_new_sqlite_catalog_is_copied_from_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowfed.db.database as database_module

    reference = Database(f"sqlite:///{tmp_path / 'reference.db'}")
    reference.upgrade()  # the DDL path
    # The DDL is not executed for a new file: the copy already holds the schema.
    monkeypatch.setattr(database_module, "sqlite_ddl_statements", _no_ddl)
    copied = Database(f"sqlite:///{tmp_path / 'copied.db'}")
    try:
        copied.ensure_schema()
        assert copied.current_revision() == HEAD_REVISION
        assert _sqlite_schema(copied) == _sqlite_schema(reference)
        with copied.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert copied.sqlite_path() == tmp_path / "copied.db"
    finally:
        copied.close()
        reference.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def _no_ddl() -> tuple[str, ...]:
    raise AssertionError("the DDL ran for a catalog the template should have made")


def test_without_a_usable_template_a_new_catalog_gets_the_ddl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowfed.db.schema as schema_module

    monkeypatch.setattr(schema_module, "SQLITE_TEMPLATE_PATH", tmp_path / "missing.db.gz")
    _open_at_head(tmp_path / "a.db")
    # An existing (here empty) file is never replaced: the DDL makes its schema.
    monkeypatch.undo()
    (tmp_path / "empty.db").write_bytes(b"")
    assert not schema_module.create_from_template(tmp_path / "empty.db")
    _open_at_head(tmp_path / "empty.db")
    # A folder that does not exist: no copy, nothing left behind.
    assert not schema_module.create_from_template(tmp_path / "nowhere" / "c.db")
    assert not (tmp_path / "nowhere").exists()
    # In-memory and PostgreSQL catalogs have no file.
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        assert Database(url).sqlite_path() is None, url
    assert Database("postgresql://u@localhost/db").sqlite_path() is None


def _open_at_head(path: Path) -> None:
    """Open the SQLite catalog ``path`` as a run does, and check it is at the head."""
    database = Database(f"sqlite:///{path}")
    try:
        database.ensure_schema()
        assert database.current_revision() == HEAD_REVISION
    finally:
        database.close()


def test_many_first_runs_creating_one_catalog_at_once(tmp_path: Path) -> None:
    import threading

    from flowfed.db.schema import create_from_template

    path = tmp_path / "shared.db"
    start = threading.Barrier(8)
    made: list[bool] = []
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            start.wait()
            made.append(create_from_template(path))
            _open_at_head(path)
        except BaseException as exc:  # reported below, on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=first_run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert made.count(True) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _sqlite_schema(database: Database) -> set[tuple[str, str, str, str | None]]:
    """Every object in sqlite_master, its SQL with trailing blanks stripped from lines."""
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master")
        return {
            (kind, name, table, None if sql is None else re.sub(r"[ \t]+\n", "\n", sql))
            for kind, name, table, sql in rows
        }


def test_empty_sqlite_gets_the_schema_create_all_makes(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    fast = Database(f"sqlite:///{tmp_path / 'fast.db'}")
    reference = Database(f"sqlite:///{tmp_path / 'reference.db'}")
    try:
        fast.ensure_schema()  # schema_sqlite.sql
        assert fast.current_revision() == HEAD_REVISION
        with reference.engine.begin() as conn:
            m.metadata.create_all(conn)
        got = _sqlite_schema(fast)
        version_table = {r for r in got if r[2] == "alembic_version"}
        assert {r[1] for r in version_table} == {
            "alembic_version",
            "sqlite_autoindex_alembic_version_1",
        }
        assert got - version_table == _sqlite_schema(reference)
        with fast.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), m.metadata) == []
    finally:
        fast.close()
        reference.close()


def test_is_empty_sqlite(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    database = Database(f"sqlite:///{tmp_path / 'e.db'}")
    try:
        with database.engine.begin() as conn:
            assert Database._is_empty(conn) and not inspect(conn).get_table_names()
            conn.exec_driver_sql("CREATE VIEW v AS SELECT 1 AS x")  # views do not count
            assert Database._is_empty(conn)
            # AUTOINCREMENT makes SQLite's own sqlite_sequence table, which does not count
            # either; the table that caused it does.
            conn.exec_driver_sql("CREATE TABLE foreign_t (id INTEGER PRIMARY KEY AUTOINCREMENT)")
            conn.exec_driver_sql("INSERT INTO foreign_t DEFAULT VALUES")
            assert not Database._is_empty(conn)
            conn.exec_driver_sql("DROP TABLE foreign_t")
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
            assert [n for (n,) in names] == ["sqlite_sequence"]
            assert Database._is_empty(conn) and not inspect(conn).get_table_names()
    finally:
        database.close()


def test_unknown_revision_is_reported(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDate) as info:
        db.ensure_schema(auto_upgrade=False)
    assert "'9999'" in str(info.value)
    with pytest.raises(SchemaOutOfDate, match="does not know that revision"):
        db.ensure_schema()


def test_default_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWFED_DATABASE_URL", raising=False)
    url = default_database_url(tmp_path / "home")
    assert url == f"sqlite:///{(tmp_path / 'home').resolve()}/flowfed.db"
    assert (tmp_path / "home").is_dir()
    monkeypatch.setenv("FLOWFED_DATABASE_URL", "postgresql://u@h/db")
    assert default_database_url() == "postgresql://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_pragmas(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        database.close()


# -- writer -----------------------------------------------------------------------------


def test_writer_lifecycle_and_batching(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    commits_before = writer.commits
    task_ids = [new_task(writer, run_id, step=f"s{i}") for i in range(50)]
    path = ["pending", "initialized", "started", "running", "finished"]
    for tid in task_ids:
        for src, dst in itertools.pairwise(path):
            writer.transition(task_id=tid, run_id=run_id, src=src, dst=dst, at=time.time())
        writer.metric(run_id=run_id, task_id=tid, name="loss", value=0.5, step=1, ts=1.0)
        writer.metric(run_id=run_id, task_id=tid, name="loss", value=0.25, step=2, ts=2.0)
        writer.log(run_id=run_id, task_id=tid, ts=1.0, level="INFO", message="hello")
        finish(writer, run_id, tid, [], metrics={"acc": 0.9})
    writer.finish_run(run_id=run_id, status="success", ended_at=time.time())
    writer.flush()
    ops = 50 * 9 + 1
    assert writer.commits - commits_before < ops / 5  # drained in batches, not per op

    run = db.get_run(run_id)
    assert run is not None
    assert run["status"] == "success" and run["ended_at"] is not None
    assert run["spec"] == {"steps": [{"name": "a"}]} and run["params"] == {"lr": 0.1}
    assert len(run["tasks"]) == 50
    t = run["tasks"][0]
    assert t["state"] == "finished" and t["node"] == "local" and t["iteration"] == 1
    assert t["started_at"] is not None and t["ended_at"] is not None
    assert t["metrics"] == {"loss": 0.25, "acc": 0.9}
    assert [tr["dst"] for tr in t["transitions"]] == path[1:]
    assert db.task_logs(t["id"])[0]["message"] == "hello"
    assert [x["value"] for x in db.task_metrics(t["id"])] == [0.5, 0.25]
    assert db.list_runs()[0]["id"] == run_id


def test_update_task_and_error(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    tid = new_task(writer, run_id)
    writer.update_task(task_id=tid, progress=0.5, attempt=2)
    with pytest.raises(ValueError, match="unknown task fields"):
        writer.update_task(task_id=tid, nope=1)
    err = {"message": "boom", "type": "ValueError", "traceback": "tb", "context": {"x": 1}}
    finish(writer, run_id, tid, [], state="error", error=err, cache_key="k" * 64)
    writer.finish_run(run_id=run_id, status="failed", ended_at=time.time(), error="boom")
    writer.flush()
    run = db.get_run(run_id[:8])
    assert run is not None and run["status"] == "failed" and run["error"] == "boom"
    (task,) = run["tasks"]
    assert task["attempt"] == 2 and task["state"] == "error" and task["error"] == err
    assert _cache_lookup(db, "k" * 64) is None  # only finished tasks are cached


def test_write_error_is_raised_once_and_batch_rolled_back(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    tid = new_task(writer, run_id)
    writer.flush()

    # Hold the thread on its first drain so the next ops land in ONE later drain.
    entered, gate = threading.Event(), threading.Event()
    original = writer._apply

    def gated(ops: list[tuple[str, Any]]) -> None:
        entered.set()
        gate.wait(10)
        original(ops)

    writer._apply = gated  # type: ignore[method-assign]
    writer.log(run_id=run_id, task_id=tid, ts=1.0, level="INFO", message="first")
    assert entered.wait(10)
    writer.log(run_id=run_id, task_id=tid, ts=2.0, level="INFO", message="doomed")
    new_task(writer, run_id, task_id=tid)  # duplicate primary key
    writer.log(run_id=run_id, task_id=tid, ts=3.0, level="INFO", message="doomed too")
    gate.set()
    with pytest.raises(IntegrityError):
        writer.flush()
    writer.flush()  # raised once only
    assert [x["message"] for x in db.task_logs(tid)] == ["first"]
    # The writer keeps working after a failed batch.
    writer.log(run_id=run_id, task_id=tid, ts=4.0, level="INFO", message="after")
    writer.close()
    assert [x["message"] for x in db.task_logs(tid)] == ["first", "after"]
    with pytest.raises(RuntimeError, match="closed"):
        writer.log(run_id=run_id, task_id=tid, ts=5.0, level="INFO", message="late")


def test_close_raises_pending_error(db: Database) -> None:
    w = db.writer()
    run_id = new_run(w)
    tid = new_task(w, run_id)
    new_task(w, run_id, task_id=tid)
    with pytest.raises(IntegrityError):
        w.close()
    w.close()  # idempotent, error already reported


def test_versions_per_name(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    ids = []
    for _ in range(2):
        tid = new_task(writer, run_id)
        a = art(run_id, tid, "model")
        ids.append(a["id"])
        finish(writer, run_id, tid, [a, art(run_id, tid, f"other-{tid}", output="o2")])
        writer.flush()
    tid = new_task(writer, run_id)
    a = art(run_id, tid, "model")
    ids.append(a["id"])
    finish(writer, run_id, tid, [a])
    writer.flush()
    assert [db.get_artifact(i)["version"] for i in ids] == [1, 2, 3]  # type: ignore[index]
    assert {x["version"] for x in db.list_artifacts(name="model")} == {1, 2, 3}
    assert all(x["version"] == 1 for x in db.list_artifacts() if x["name"] != "model")


def test_versions_concurrent_writers(db_url: str, db: Database) -> None:
    # Eight engines stand for eight server processes racing to version one artifact name.
    w0 = db.writer()
    run_id = new_run(w0)
    others = [Database(db_url) for _ in range(7)]
    writers = [w0, *(o.writer() for o in others)]
    try:
        task_ids = [new_task(w0, run_id) for _ in range(160)]
        w0.flush()
        start = threading.Barrier(len(writers))

        def produce(w: Writer, tids: list[str]) -> None:
            start.wait()
            for tid in tids:
                finish(w, run_id, tid, [art(run_id, tid, "shared")])
                w.flush()  # one transaction per artifact: the most contention possible

        threads = [
            threading.Thread(target=produce, args=(w, task_ids[i :: len(writers)]))
            for i, w in enumerate(writers)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for w in writers:
            w.flush()
        versions = sorted(x["version"] for x in db.list_artifacts(name="shared"))
        assert versions == list(range(1, 161))
    finally:
        for w in writers:
            w.close()
        for o in others:
            o.close()


# -- queries ----------------------------------------------------------------------------


def test_lineage_three_levels(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    t1, t2, t3 = (new_task(writer, run_id, step=s) for s in ("load", "prep", "train"))
    raw = art(run_id, t1, "raw")
    labels = art(run_id, t1, "labels", output="labels")
    clean = art(run_id, t2, "clean", parents=[raw["id"]])
    model = art(run_id, t3, "model", parents=[clean["id"], labels["id"]])
    finish(writer, run_id, t1, [raw, labels])
    finish(writer, run_id, t2, [clean])
    finish(writer, run_id, t3, [model])
    writer.flush()

    tree = db.lineage("model")
    assert tree is not None and tree["id"] == model["id"]
    assert tree["producer"]["tool"] == "tools.train"
    names = sorted(p["name"] for p in tree["parents"])
    assert names == ["clean", "labels"]
    clean_node = next(p for p in tree["parents"] if p["name"] == "clean")
    assert [p["name"] for p in clean_node["parents"]] == ["raw"]
    assert clean_node["parents"][0]["parents"] == []
    assert db.lineage("nope") is None

    # A cycle (only possible through corrupt data) is cut, and a lost parent is marked.
    with db.engine.begin() as conn:
        conn.execute(
            insert(m.artifact_parents),
            [
                {"artifact_id": raw["id"], "parent_id": model["id"]},
                {"artifact_id": labels["id"], "parent_id": "f" * 32},
            ],
        )
    tree = db.lineage(model["id"])
    assert tree is not None
    clean_node = next(p for p in tree["parents"] if p["name"] == "clean")
    back = clean_node["parents"][0]["parents"][0]
    assert back["id"] == model["id"] and back["cycle"] is True and back["parents"] == []
    labels_node = next(p for p in tree["parents"] if p["name"] == "labels")
    assert labels_node["parents"] == [{"id": "f" * 32, "missing": True, "parents": []}]


def test_get_artifact_refs(db: Database, writer: Writer) -> None:
    run_id = new_run(writer)
    tid = new_task(writer, run_id)
    a1 = art(run_id, tid, "metrics")
    finish(writer, run_id, tid, [a1])
    writer.flush()
    tid2 = new_task(writer, run_id)
    a2 = art(run_id, tid2, "metrics", parents=[a1["id"]])
    finish(writer, run_id, tid2, [a2])
    writer.flush()

    assert db.get_artifact(a1["id"])["version"] == 1  # type: ignore[index]
    assert db.get_artifact(a2["id"][:10])["id"] == a2["id"]  # type: ignore[index]
    assert db.get_artifact("metrics")["id"] == a2["id"]  # type: ignore[index]
    assert db.get_artifact("metrics:1")["id"] == a1["id"]  # type: ignore[index]
    assert db.get_artifact("metrics@2")["id"] == a2["id"]  # type: ignore[index]
    assert db.get_artifact("metrics:3") is None
    assert db.get_artifact("zzzz") is None
    assert db.get_artifact(a1["id"][:3]) is None  # too short for a prefix
    got = db.get_artifact("metrics")
    assert got is not None
    assert got["parents"] == [a1["id"]] and got["meta"] == {"k": 1}
    assert got["producer"] == {
        "task_id": tid2,
        "step": "train",
        "tool": "tools.train",
        "tool_version": "2",
        "code_hash": None,  # this task row was written without one
        "run_id": run_id,
    }
    # Ambiguous prefixes are an error, not a silent "not found".
    with db.engine.begin() as conn:
        for suffix in ("a", "b"):
            row = {k: v for k, v in art(run_id, tid, f"amb{suffix}").items()}
            row.update(id="abcd" + suffix * 28, version=1)
            del row["parents"], row["output"]
            conn.execute(insert(m.artifacts), [row])
    with pytest.raises(AmbiguousRef, match="abcd"):
        db.get_artifact("abcd")
    assert db.get_run("zzzzzz") is None


def test_cache_lookup_and_run_artifacts(db: Database, writer: Writer) -> None:
    run1 = new_run(writer)
    tid = new_task(writer, run1)
    model, report = art(run1, tid, "model", output="model"), art(run1, tid, "r", output="report")
    finish(writer, run1, tid, [model, report], cache_key="c" * 64)
    writer.flush()

    hit = _cache_lookup(db, "c" * 64)
    assert hit is not None
    assert set(hit) == {"model", "report"} and hit["model"]["id"] == model["id"]
    assert _cache_lookup(db, "d" * 64) is None

    # A second run reuses the outputs through the cache.
    run2 = new_run(writer)
    tid2 = new_task(writer, run2)
    finish(
        writer,
        run2,
        tid2,
        [],
        state="cached",
        cached=True,
        cache_key="c" * 64,
        reused={"model": model["id"], "report": report["id"]},
    )
    writer.flush()
    got = db.run_artifacts(run2)
    assert [(x["name"], x["reused"], x["output"]) for x in got] == [
        ("model", True, "model"),
        ("r", True, "report"),
    ]
    assert [x["reused"] for x in db.run_artifacts(run1)] == [False, False]
    assert db.list_artifacts(run_id=run2) == []  # produced elsewhere

    # Once an output is gone, the entry is no longer a hit.
    with db.engine.begin() as conn:
        conn.execute(m.artifacts.delete().where(m.artifacts.c.id == report["id"]))
    assert _cache_lookup(db, "c" * 64) is None


def _cache_lookup(db: Database, key: str) -> dict[str, dict[str, Any]] | None:
    from flowfed.engine import cache

    hit = cache.lookup(db, key)
    return None if hit is None else hit[0]
