"""package_model: the bundle's files, its model card and its determinism."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flowfed.tools.library.models import LogisticRegressionModel
from flowfed.tools.library.packaging import package_model
from tests.library.conftest import Recorder

METRICS = {
    "accuracy": 0.9,
    "roc_auc": 0.95,
    "rows": 10,
    "confusion_matrix": {"tp": 4, "fp": 1, "tn": 5, "fn": 0},
}


def model() -> LogisticRegressionModel:
    return LogisticRegressionModel(["age", "bmi"], [0.5, -0.25], 0.125, training={"epochs": 3})


class Handle(SimpleNamespace):
    """Stands in for an artifact handle (what a ``Lazy`` input receives)."""

    def load(self) -> object:
        return self.value


def test_bundle_holds_weights_metrics_card_and_manifest(tmp_path: Path, ctx: Recorder) -> None:
    train = Handle(name="train", version=2, hash="ab" * 32, size=10, meta={"rows": 455})
    path = package_model(
        model(),
        METRICS,
        ctx,
        train,
        name="bc",
        data_sources=["scikit-learn breast cancer Wisconsin (diagnostic)"],
        output_dir=str(tmp_path),
    )
    assert path == tmp_path / "bc.zip"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [
            "MODEL_CARD.md",
            "manifest.json",
            "metrics.json",
            "model/model.json",
        ]
        (tmp_path / "x").mkdir()
        z.extract("model/model.json", tmp_path / "x")
        back = LogisticRegressionModel.load(tmp_path / "x" / "model" / "model.json")
        assert np.array_equal(back.weights, [0.5, -0.25]) and back.bias == 0.125
        assert json.loads(z.read("metrics.json")) == METRICS
        card = z.read("MODEL_CARD.md").decode()
        manifest = json.loads(z.read("manifest.json"))
    assert "## Data provenance" in card
    assert "scikit-learn breast cancer Wisconsin (diagnostic)" in card
    assert "`train:2`" in card and "ab" * 32 in card and "455 rows" in card
    assert "| accuracy | 0.9000 |" in card and "| actual 1 | 0 | 4 |" in card
    assert manifest["format"] == "flowfed.model_bundle/1"
    assert manifest["lineage"]["train"]["sha256"] == "ab" * 32
    assert set(manifest["files"]) == {"MODEL_CARD.md", "metrics.json", "model/model.json"}


def test_bundle_bytes_depend_only_on_the_inputs(tmp_path: Path, ctx: Recorder) -> None:
    a = package_model(model(), METRICS, ctx, output_dir=str(tmp_path / "a"))
    b = package_model(model(), METRICS, ctx, output_dir=str(tmp_path / "b"))
    assert a.read_bytes() == b.read_bytes()


def test_card_says_when_provenance_is_missing(ctx: Recorder) -> None:
    path = package_model(model(), METRICS, ctx)
    with zipfile.ZipFile(path) as z:
        assert "not recorded" in z.read("MODEL_CARD.md").decode()
    assert any(k == "log" and p["level"] == "warning" for k, p in ctx.events)


def test_package_refuses_what_is_not_a_model(ctx: Recorder) -> None:
    with pytest.raises(TypeError, match="save"):
        package_model({"weights": [1]}, METRICS, ctx)
