"""``resolve_model_ref`` and ``load_model``: what a later flow selects a model through."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from flowfed.db import Database
from flowfed.db.registry import BadModelRef, ModelNotFound, parse_model_ref, resolve_model_ref
from tests.models.conftest import Catalog


@pytest.fixture(scope="module")
def db(catalog: Catalog) -> Iterator[Database]:
    database = Database(catalog.db_url)
    yield database
    database.close()


def test_name_at_version_resolves_to_the_model_artifact(db: Database, catalog: Catalog) -> None:
    listed = {(e["name"], e["version"]): e for e in catalog.json("models", "list")["items"]}
    for (name, version), e in listed.items():
        row = resolve_model_ref(db, f"{name}@{version}")
        assert (row["id"], row["hash"], row["kind"]) == (e["artifact_id"], e["hash"], "model")
        assert resolve_model_ref(db, f"{name}:{version}")["id"] == e["artifact_id"]
        assert resolve_model_ref(db, e["artifact_id"])["id"] == e["artifact_id"]
    assert resolve_model_ref(db, "classifier")["version"] == 2
    assert resolve_model_ref(db, "classifier@latest")["version"] == 2


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("classifier@3", "classifier has versions 1..2; there is no classifier@3"),
        (
            f"classifier@{2**40}",
            "classifier has versions 1..2; there is no classifier@1099511627776",
        ),
        ("nope@1", "no model named 'nope'; known: classifier, refined"),
        ("train@1", "'train' is a pandas artifact, not a model; known: classifier, refined"),
    ],
)
def test_unknown_references_say_what_exists(db: Database, ref: str, message: str) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolve_model_ref(db, ref)
    assert str(err.value) == message


@pytest.mark.parametrize("ref", ["", "@2", ":1", "   "])
def test_malformed_references(db: Database, ref: str) -> None:
    with pytest.raises(BadModelRef, match="is not a model reference"):
        resolve_model_ref(db, ref)


def test_parse_model_ref() -> None:
    assert parse_model_ref("global_model@3") == ("global_model", 3)
    assert parse_model_ref("a@b") == ("a@b", None)
    assert parse_model_ref("m@latest") == ("m", None)


def test_load_model_brings_back_the_trained_weights(catalog: Catalog) -> None:
    # A fresh process, as a later flow's tool would: the model predicts as evaluated.
    code = (
        "from flowfed.api import load_model\n"
        "m = load_model('classifier@1')\n"
        "print(type(m).__name__, len(m.features), m.training['learning_rate'])\n"
    )
    env = dict(catalog.env)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=catalog.root, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["LogisticRegressionModel", "30", "0.5"]
    bad = subprocess.run(
        [sys.executable, "-c", "from flowfed.api import load_model; load_model('classifier@5')"],
        cwd=catalog.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "ModelNotFound: classifier has versions 1..2; there is no classifier@5" in bad.stderr


def test_metrics_several_evaluations_report_are_qualified_by_node() -> None:
    from flowfed.db.registry import merged_metrics

    evals = [
        {"step": "validate", "node": "hospital-a", "metrics": {"accuracy": 0.9, "auc": 0.95}},
        {"step": "validate", "node": "hospital-b", "metrics": {"accuracy": 0.8}},
        {"step": "pooled", "node": "central", "metrics": {"pooled_accuracy": 0.85}},
    ]
    assert merged_metrics({"loss": 0.2, "auc": 0.5}, evals) == {
        "loss": 0.2,
        "auc": 0.95,  # one evaluation reports it: it wins over the training value
        "accuracy@hospital-a": 0.9,
        "accuracy@hospital-b": 0.8,
        "pooled_accuracy": 0.85,
    }
