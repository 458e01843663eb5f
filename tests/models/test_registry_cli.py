"""``flowfed models list|show|compare`` on the local catalog, as a user types them."""

from __future__ import annotations

from typing import Any

from tests.models.conftest import Catalog


def by_version(items: list[dict[str, Any]], name: str) -> dict[int, dict[str, Any]]:
    return {e["version"]: e for e in items if e["name"] == name}


def test_every_trained_model_is_a_versioned_entry(catalog: Catalog) -> None:
    items = catalog.json("models", "list")["items"]
    assert sorted((e["name"], e["version"]) for e in items) == [
        ("classifier", 1),
        ("classifier", 2),
        ("refined", 1),
        ("refined", 2),
    ]
    # Newest first.
    assert [e["created_at"] for e in items] == sorted(
        (e["created_at"] for e in items), reverse=True
    )


def test_a_cached_rerun_registers_no_new_version(catalog: Catalog) -> None:
    third = catalog.reports[2]
    fit = next(s for s in third["steps"] if s["name"] == "fit")["tasks"][-1]
    assert fit["status"] == "cached"
    v1 = by_version(catalog.json("models", "list")["items"], "classifier")[1]
    assert v1["run_id"] == catalog.reports[0]["run_id"]


def test_entry_names_its_artifact_run_step_task_and_hash(catalog: Catalog) -> None:
    entries = by_version(
        catalog.json("models", "list", "--name", "classifier")["items"], "classifier"
    )
    for version, run in ((1, 0), (2, 1)):
        e = entries[version]
        art = catalog.json("artifacts", "show", e["artifact_id"])
        assert (art["name"], art["version"], art["hash"]) == ("classifier", version, e["hash"])
        assert e["run_id"] == catalog.reports[run]["run_id"] == art["run_id"]
        assert e["step"] == "fit" and e["task_id"] == art["task_id"]
        assert e["tool"] == "flowfed.logistic_regression" and e["tool_version"] == "1.0"
        assert e["model_class"] == "flowfed.tools.library.models:LogisticRegressionModel"
        assert e["variant"] is None  # the flow sweeps nothing
        assert e["round"] is None  # nor is it federated


def test_metrics_join_training_and_every_evaluation_of_the_model(catalog: Catalog) -> None:
    e = catalog.json("models", "show", "classifier@2")
    trained = catalog.task_metrics(1, "fit")
    on_test = catalog.task_metrics(1, "evaluate")
    on_train = catalog.task_metrics(1, "evaluate on train")
    assert e["training"]["metrics"] == trained
    assert {ev["step"]: ev["metrics"] for ev in e["evaluations"]} == {
        "evaluate": on_test,
        "evaluate on train": on_train,
    }
    # The refit consumed the model too, but it made a model: not an evaluation.
    assert "refit" not in {ev["step"] for ev in e["evaluations"]}
    # Both evaluations report accuracy on the same node: qualified by step.
    assert e["metrics"]["accuracy@evaluate"] == on_test["accuracy"]
    assert e["metrics"]["accuracy@evaluate on train"] == on_train["accuracy"]
    assert e["metrics"]["loss"] == trained["loss"]
    assert "accuracy" not in e["metrics"]


def test_a_warm_started_model_is_its_own_entry(catalog: Catalog) -> None:
    e = catalog.json("models", "show", "refined@1")
    assert e["step"] == "refit" and e["evaluations"] == []
    assert e["metrics"] == catalog.task_metrics(0, "refit")


def test_show_name_lists_versions_oldest_first(catalog: Catalog) -> None:
    data = catalog.json("models", "show", "classifier")
    assert data["name"] == "classifier"
    assert [v["version"] for v in data["versions"]] == [1, 2]
    latest = catalog.json("models", "show", "classifier@latest")
    assert latest["version"] == 2


def test_list_filters_by_run(catalog: Catalog) -> None:
    run = catalog.reports[1]["run_id"]
    items = catalog.json("models", "list", "--run", run[:10])["items"]
    assert sorted((e["name"], e["version"]) for e in items) == [("classifier", 2), ("refined", 2)]


def test_compare_puts_metrics_and_sources_side_by_side(catalog: Catalog) -> None:
    first = by_version(catalog.json("models", "list")["items"], "classifier")[1]
    data = catalog.json("models", "compare", first["artifact_id"], "classifier@2")
    assert data["models"] == ["classifier@1", "classifier@2"]
    assert data["metrics"]["accuracy@evaluate"] == [
        catalog.task_metrics(0, "evaluate")["accuracy"],
        catalog.task_metrics(1, "evaluate")["accuracy"],
    ]
    # The faster learning rate fits the training rows better in 100 epochs.
    assert data["metrics"]["loss"][0] < data["metrics"]["loss"][1]
    assert data["same_sources"] is True
    roots = [[(r["name"], r["version"]) for r in rs] for rs in data["lineage_roots"]]
    assert roots == [[("raw", 1)], [("raw", 1)]]


def test_compare_marks_models_with_different_sources(catalog: Catalog) -> None:
    data = catalog.json("models", "compare", "classifier@1", "refined@1")
    assert data["same_sources"] is True  # refined derives from classifier, i.e. from raw
    names = set(data["metrics"])
    assert {"loss", "train_accuracy", "accuracy@evaluate"} <= names
    assert data["metrics"]["accuracy@evaluate"][1] is None  # refined was never evaluated


def test_tables_for_people(catalog: Catalog) -> None:
    listing = catalog.ff("models", "list").stdout
    assert "classifier@1" in listing and "refined@2" in listing
    shown = catalog.ff("models", "show", "classifier@1").stdout
    assert "evaluated by evaluate on local" in shown and "flowfed lineage classifier:1" in shown
    compared = catalog.ff("models", "compare", "classifier@1", "classifier@2").stdout
    assert "classifier@1" in compared and "roc_auc@evaluate" in compared and "raw:1" in compared


def test_unknown_version_names_the_versions_that_exist(catalog: Catalog) -> None:
    res = catalog.ff("models", "show", "classifier@9", check=2)
    assert res.stderr.strip().splitlines() == [
        "error: classifier has versions 1..2; there is no classifier@9"
    ]


def test_unknown_name_lists_the_known_models(catalog: Catalog) -> None:
    res = catalog.ff("models", "show", "nope@1", check=2)
    assert "no model named 'nope'; known: classifier, refined" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_artifact_that_is_not_a_model_is_refused(catalog: Catalog) -> None:
    res = catalog.ff("models", "compare", "classifier@1", "scores@1", check=2)
    assert "'scores' is a json artifact, not a model; known: classifier, refined" in res.stderr


def test_malformed_reference_is_a_one_line_error(catalog: Catalog) -> None:
    res = catalog.ff("models", "show", "@3", check=2)
    assert "is not a model reference: use NAME or NAME@VERSION" in res.stderr
    res = catalog.ff("models", "list", "--run", "zzzzzzzz", check=2)
    assert "no run matches 'zzzzzzzz'" in res.stderr
