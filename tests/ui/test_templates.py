"""Flow templates over the REST API: list, parameter schema, instantiate."""

from __future__ import annotations

import pytest
import yaml

from flowfed.server.problems import ProblemError
from flowfed.server.templates import instantiate, load_templates, parameter_schema
from tests.server.conftest import Server


def test_every_bundled_template_has_a_flow_and_a_schema_with_its_config_keys() -> None:
    templates = load_templates()
    assert {"local-pipeline", "federated-classification", "federated-evaluation"} <= set(templates)
    for t in templates.values():
        schema = parameter_schema(t)
        assert set(schema["properties"]) == {"name", *t.flow["config"]}
        for key, value in t.flow["config"].items():
            assert schema["properties"][key]["default"] == value


def test_a_step_key_named_on_stays_a_string() -> None:
    # YAML 1.1 reads `on:` as True; the federated templates place steps with it.
    step = load_templates()["federated-classification"].flow["steps"][0]
    assert step["on"] == "each-dataset"
    text = instantiate(load_templates()["federated-classification"], {"rounds": 5})
    assert yaml.safe_load(text)["steps"][0]["on"] == "each-dataset"


def test_bad_values_name_the_field() -> None:
    t = load_templates()["federated-classification"]
    with pytest.raises(ProblemError) as info:
        instantiate(t, {"rounds": "many", "strategy": "best", "colour": 1})
    fields = [e["field"] for e in info.value.errors or []]
    assert fields == ["rounds", "strategy", "colour"]
    assert info.value.status == 422


def test_list_show_and_instantiate_over_http(ui_server: Server) -> None:
    api = ui_server.client()
    items = api.get("/api/v1/templates").json()["items"]
    assert [i["id"] for i in items][:2] == ["federated-classification", "federated-evaluation"]
    local = api.get("/api/v1/templates/local-pipeline").json()
    props = local["schema"]["properties"]
    # Types and choices come from the tools' config schemas.
    assert props["epochs"]["type"] == "integer"
    assert props["epochs"]["x-tool"] == "flowfed.logistic_regression.epochs"
    assert props["test_fraction"]["type"] == "number"
    assert props["dataset"]["enum"] == ["breast_cancer"]

    r = api.post("/api/v1/templates/local-pipeline/flows", json={"name": "Tpl HTTP", "epochs": 7})
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["version"]) == ("Tpl HTTP", 1)
    stored = api.get("/api/v1/flows/Tpl HTTP").json()
    assert stored["spec"]["config"]["epochs"] == 7
    assert "template 'local-pipeline'" in stored["source"]
    run = api.post("/api/v1/runs", json={"flow": "Tpl HTTP"}).json()
    assert ui_server.wait_run(run["run_id"])["status"] == "success"


def test_http_errors_are_problems(ui_server: Server) -> None:
    api = ui_server.client()
    r = api.get("/api/v1/templates/nope")
    assert r.status_code == 404
    assert r.json()["detail"] == "no template 'nope'"
    r = api.post("/api/v1/templates/local-pipeline/flows", json={"epochs": 0})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [
        {"message": "epochs must be at least 1, got 0", "field": "epochs"}
    ]
    r = api.post("/api/v1/templates/local-pipeline/flows", json=[1, 2])
    assert r.status_code == 422
    assert ui_server.client(auth=False).get("/api/v1/templates").status_code == 401
