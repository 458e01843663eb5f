"""Helpers of the central-side red-team tests: where did a marker end up?

Tests elsewhere (node-side ones too) plant marker bytes in a node's data and call
:func:`find_marker` over everything the central side keeps (its home directory, artifact
store, SQLite catalog with its WAL, or PostgreSQL catalog) to prove the bytes never got
there. Kept free of fixtures so that it does not conflict with any conftest.
"""

from __future__ import annotations

from pathlib import Path

#: PostgreSQL column types that can hold a marker as text or bytes.
_TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "xml")


def find_marker(marker: bytes, *, paths: list[Path], db_url: str | None = None) -> list[str]:
    """Every place ``marker`` occurs: files under ``paths`` and, with a PostgreSQL
    ``db_url``, columns of the tables of its ``public`` schema.

    Files: every regular file under each path (recursively; a path may be a file), read
    as raw bytes, so a SQLite catalog, its ``-wal`` and ``-shm`` files and artifact blobs
    are all searched as stored (compressed files are not unpacked). A file found is
    reported as its path.

    PostgreSQL: every ``text``/``varchar``/``char``/``json``/``jsonb``/``xml`` column is
    searched for the marker as UTF-8 text (JSON as its text form), every ``bytea`` column
    for the raw bytes. A hit is reported as ``postgresql:<table>.<column> (<n> rows)``.
    A SQLite ``db_url`` adds nothing: pass its file's directory in ``paths``.

    Returns an empty list when the marker is nowhere.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "a.log").write_bytes(b"...MARK-42...")
        >>> find_marker(b"MARK-42", paths=[root]) == [str(root / "a.log")]
        True
        >>> find_marker(b"MARK-43", paths=[root])
        []
    """
    if not marker:
        raise ValueError("an empty marker is found everywhere: give some bytes")
    found: list[str] = []
    for root in paths:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            continue
        for file in files:
            try:
                data = file.read_bytes()
            except OSError:
                continue  # vanished (a WAL checkpointed away) or unreadable
            if marker in data:
                found.append(str(file))
    if db_url is not None and db_url.split(":", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    ):
        found += _postgres_hits(marker, db_url)
    return found


def _postgres_hits(marker: bytes, db_url: str) -> list[str]:
    import psycopg
    from psycopg import sql

    # psycopg wants a libpq URL, not SQLAlchemy's dialect+driver form.
    url = "postgresql://" + db_url.split("://", 1)[1]
    text_marker = marker.decode("utf-8", errors="strict") if _is_utf8(marker) else None
    hits: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "ORDER BY c.table_name, c.ordinal_position"
        ).fetchall()
        for table, column, kind in columns:
            col = sql.Identifier(column)
            tbl = sql.Identifier("public", table)
            if kind == "bytea":
                query = sql.SQL("SELECT count(*) FROM {} WHERE position(%s::bytea in {}) > 0")
                args: tuple[object, ...] = (marker,)
            elif kind in _TEXT_TYPES and text_marker is not None:
                query = sql.SQL("SELECT count(*) FROM {} WHERE strpos({}::text, %s) > 0")
                args = (text_marker,)
            else:
                continue
            n = conn.execute(query.format(tbl, col), args).fetchone()
            if n is not None and n[0]:
                hits.append(f"postgresql:{table}.{column} ({n[0]} rows)")
    return hits


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
