"""Database adapters: CSV, Parquet, SQL and scikit-learn's bundled data sets."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from flowfed import get_registry
from flowfed.tools.library.adapters import csv, parquet, sklearn_dataset, sql_table
from tests.library.conftest import Recorder


def test_every_builtin_is_registered_with_its_type_and_version() -> None:
    expected = {
        "flowfed.csv": "database-adapter",
        "flowfed.parquet": "database-adapter",
        "flowfed.sql_table": "database-adapter",
        "flowfed.sklearn_dataset": "database-adapter",
        "flowfed.impute": "preprocessing",
        "flowfed.standardize": "preprocessing",
        "flowfed.column_sums": "data-transformation",
        "flowfed.combine_sums": "data-transformation",
        "flowfed.train_test_split": "data-transformation",
        "flowfed.package_model": "data-transformation",
        "flowfed.logistic_regression": "analysis",
        "flowfed.mlp": "analysis",
        "flowfed.evaluate_classifier": "evaluation",
    }
    reg = get_registry()
    for name, kind in expected.items():
        spec = reg.get(f"{name}@1.0")
        assert str(spec.type) == kind, name
        assert spec.description, f"{name} has no docstring"
    assert get_registry().get("flowfed.logistic_regression").outputs[0].is_model
    assert get_registry().get("flowfed.mlp").outputs[0].is_model


def test_csv_passes_options_and_logs_the_file_hash(tmp_path: Path, ctx: Recorder) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a;b\n1;x\n2;y\n")
    table = csv(ctx, path=str(path), options={"sep": ";"})
    assert table.to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert any(digest in line for line in ctx.logs())


def test_csv_pinned_hash_refuses_a_changed_file(tmp_path: Path, ctx: Recorder) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a\n1\n")
    pin = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(csv(ctx, path=str(path), sha256=pin)) == 1
    path.write_text("a\n1\n2\n")
    with pytest.raises(ValueError, match="pins"):
        csv(ctx, path=str(path), sha256=pin)


def test_csv_unknown_option_is_named(tmp_path: Path, ctx: Recorder) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ValueError, match="read_csv option"):
        csv(ctx, path=str(path), options={"no_such_option": 1})


def test_parquet_round_trip_and_column_selection(tmp_path: Path, ctx: Recorder) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.5, 2.5], "b": [3, 4]}).to_parquet(path)
    assert parquet(ctx, path=str(path)).to_dict("list") == {"a": [1.5, 2.5], "b": [3, 4]}
    assert list(parquet(ctx, path=str(path), columns=["b"]).columns) == ["b"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    db = tmp_path / "clinic.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER, site TEXT, age REAL)")
        conn.executemany(
            "INSERT INTO patients VALUES (?, ?, ?)",
            [(1, "a", 50.0), (2, "b", 61.0), (3, "a", 47.0)],
        )
    return f"sqlite:///{db}"


def test_sql_table_reads_a_table(sqlite_url: str, ctx: Recorder) -> None:
    table = sql_table(ctx, url=sqlite_url, table="patients")
    assert table["id"].tolist() == [1, 2, 3]


def test_sql_query_binds_parameters(sqlite_url: str, ctx: Recorder) -> None:
    table = sql_table(
        ctx,
        url=sqlite_url,
        query="SELECT id, age FROM patients WHERE site = :site ORDER BY id",
        params={"site": "a"},
    )
    assert table.to_dict("list") == {"id": [1, 3], "age": [50.0, 47.0]}


def test_sql_url_from_environment_and_argument_checks(
    sqlite_url: str, ctx: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINIC_DB", sqlite_url)
    assert len(sql_table(ctx, url_env="CLINIC_DB", table="patients")) == 3
    with pytest.raises(ValueError, match="exactly one of 'table' and 'query'"):
        sql_table(ctx, url=sqlite_url)
    with pytest.raises(ValueError, match="not set"):
        sql_table(ctx, url_env="NO_SUCH_VARIABLE_FOR_FLOWFED", table="patients")


@pytest.mark.parametrize(
    ("name", "rows", "features", "classes"),
    [("breast_cancer", 569, 30, {0, 1}), ("iris", 150, 4, {0, 1, 2}), ("wine", 178, 13, {0, 1, 2})],
)
def test_sklearn_dataset_has_a_target_column(
    name: str, rows: int, features: int, classes: set[int], ctx: Recorder
) -> None:
    table = sklearn_dataset(ctx, name=name)
    assert table.shape == (rows, features + 1)
    assert table.columns[-1] == "target"
    assert set(table["target"]) == classes


def test_sklearn_diabetes_target_is_continuous(ctx: Recorder) -> None:
    table = sklearn_dataset(ctx, name="diabetes")
    assert table.shape == (442, 11) and table["target"].nunique() > 100


def test_sklearn_dataset_name_is_validated_by_the_config_schema() -> None:
    cfg = get_registry().get("flowfed.sklearn_dataset").config_model
    with pytest.raises(ValueError):
        cfg(name="mnist")
