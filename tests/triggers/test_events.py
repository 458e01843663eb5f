"""Event triggers, conditions, overlap and failed starts on a real server (SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from flowfed.db import Database
from flowfed.db.platform_events import node_dataset_changed
from tests.polling import wait_for
from tests.server.conftest import Server
from tests.triggers.conftest import Clock, add_flow, add_trigger, history, runs_of


def numbers_flow(name: str, output: str = "raw") -> str:
    return (
        f"name: {name}\nconfig: {{n: 3, node: none}}\n"
        f"steps:\n  - {{name: load, tool: numbers, params: {{n: '${{config.n}}'}}, "
        f"outputs: [{output}]}}\n"
    )


def flaky_flow(name: str, marker: Path) -> str:
    return (
        f"name: {name}\nsteps:\n  - {{name: load, tool: numbers, outputs: [raw]}}\n"
        f"  - {{name: step, tool: flaky, inputs: {{xs: raw}}, params: {{marker: '{marker}'}}, "
        "outputs: [out]}\n"
    )


def started(s: Server, trigger: str) -> list[dict]:
    return [f for f in history(s, trigger) if f["status"] == "started"]


def test_a_failed_run_starts_its_fallback_flow(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    marker = s.root / "etl-broken"
    marker.write_text("x")
    add_flow(s, flaky_flow("nightly-etl", marker))
    add_flow(s, numbers_flow("nightly-etl-fallback"))
    add_trigger(
        s,
        {
            "name": "etl-fallback",
            "flow": "nightly-etl-fallback",
            "on": {"run": {"flow": "nightly-etl", "status": "failed"}},
            "params": {"n": 2},
        },
    )
    api = s.client()
    ok_marker_gone = api.post("/api/v1/runs", json={"flow": "nightly-etl"}).json()["run_id"]
    assert s.wait_run(ok_marker_gone)["status"] == "failed"
    fires = wait_for("the fallback fire", lambda: started(s, "etl-fallback"))
    assert fires[0]["event"]["run_id"] == ok_marker_gone
    assert fires[0]["event"]["status"] == "failed"
    run = s.wait_run(fires[0]["run_id"])
    assert run["status"] == "success" and run["flow_name"] == "nightly-etl-fallback"
    assert run["params"] == {"n": 2}
    # A successful run of the same flow does not fire the fallback.
    marker.unlink()
    good = api.post("/api/v1/runs", json={"flow": "nightly-etl"}).json()["run_id"]
    assert s.wait_run(good)["status"] == "success"
    shown = api.get("/api/v1/triggers/etl-fallback").json()
    assert shown["last_run_id"] == fires[0]["run_id"] and shown["next_fire_at"] is None
    assert len(started(s, "etl-fallback")) == 1


def test_an_artifact_registered_under_a_matching_name_fires(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    add_flow(s, numbers_flow("producer", output="global_model"))
    add_flow(s, numbers_flow("evaluate"))
    add_trigger(
        s,
        {
            "name": "eval-new-model",
            "flow": "evaluate",
            "on": {"artifact": {"name": "global_mod*"}},
            "params": {"n": "${event.version}"},
        },
    )
    api = s.client()
    rid = api.post("/api/v1/runs", json={"flow": "producer"}).json()["run_id"]
    assert s.wait_run(rid)["status"] == "success"
    fire = wait_for("the artifact fire", lambda: started(s, "eval-new-model"))[0]
    assert fire["event"]["name"] == "global_model" and fire["event"]["run_id"] == rid
    run = s.wait_run(fire["run_id"])
    assert run["flow_name"] == "evaluate"
    assert run["params"] == {"n": fire["event"]["version"]}
    assert isinstance(run["params"]["n"], int)


def test_a_condition_rule_fires_only_when_its_expression_holds(
    tserver: tuple[Server, Clock],
) -> None:
    s, _ = tserver
    add_flow(s, numbers_flow("cond-src"))
    add_flow(s, numbers_flow("cond-dst"))
    add_trigger(
        s,
        {
            "name": "big-runs",
            "flow": "cond-dst",
            "on": {"run": {"flow": "cond-src"}},
            "when": "event.status == 'success' and event.params.n > 3",
            "params": {"n": "${event.params.n + 1}"},
        },
    )
    api = s.client()
    small = api.post("/api/v1/runs", json={"flow": "cond-src", "params": {"n": 2}}).json()
    s.wait_run(small["run_id"])
    big = api.post("/api/v1/runs", json={"flow": "cond-src", "params": {"n": 5}}).json()
    s.wait_run(big["run_id"])
    fires = wait_for("the condition fire", lambda: started(s, "big-runs"))
    # Events are taken in the order runs ended: the small run was judged (and passed
    # over) before the big one fired.
    assert [f["event"]["run_id"] for f in history(s, "big-runs")] == [big["run_id"]]
    assert s.wait_run(fires[0]["run_id"])["params"] == {"n": 6}


def test_a_node_dataset_change_reruns_preprocessing_for_that_node(
    tserver: tuple[Server, Clock],
) -> None:
    s, _ = tserver
    add_flow(s, numbers_flow("preprocess"))
    add_trigger(
        s,
        {
            "name": "reprep",
            "flow": "preprocess",
            "on": {"node_dataset": {"dataset": "patients"}},
            "params": {"node": "${event.node}"},
        },
    )
    db = Database(s.db_url)
    try:
        node_dataset_changed(db, "hospital-b", "images", "aa", "bb")  # another dataset
        node_dataset_changed(db, "hospital-a", "patients", "11", "22")
    finally:
        db.close()
    fire = wait_for("the dataset fire", lambda: started(s, "reprep"))[0]
    assert fire["event"] == {
        "kind": "node.dataset_changed",
        "node": "hospital-a",
        "dataset": "patients",
        "old_hash": "11",
        "new_hash": "22",
        "ts": fire["event"]["ts"],
    }
    assert s.wait_run(fire["run_id"])["params"] == {"node": "hospital-a"}
    assert len(history(s, "reprep")) == 1


def test_overlap_skip_records_a_skipped_tick_while_the_previous_run_goes_on(
    tserver: tuple[Server, Clock],
) -> None:
    s, clock = tserver
    add_flow(s, "name: slow-flow\nsteps:\n  - {name: wait, tool: slow, outputs: [x]}\n")
    now = clock.now()
    add_trigger(
        s,
        {"name": "slow-every-minute", "flow": "slow-flow", "schedule": {"every": "1m"}},
    )
    clock.set(now + 60.5)
    first = wait_for("the first tick", lambda: started(s, "slow-every-minute"))[0]
    clock.set(now + 120.5)
    skipped = wait_for(
        "the skipped tick",
        lambda: [f for f in history(s, "slow-every-minute") if f["status"] == "skipped"],
    )[0]
    assert first["run_id"] in skipped["reason"] and "overlap: skip" in skipped["reason"]
    assert skipped["run_id"] is None
    assert len(runs_of(s, "slow-flow")) == 1
    api = s.client()
    assert api.post(f"/api/v1/runs/{first['run_id']}/cancel").status_code == 202
    assert s.wait_run(first["run_id"])["status"] == "cancelled"
    # Once the run is over, the next tick starts a new one.
    clock.set(now + 180.5)
    wait_for("the third tick", lambda: len(started(s, "slow-every-minute")) == 2)
    second = started(s, "slow-every-minute")[0]
    assert api.post(f"/api/v1/runs/{second['run_id']}/cancel").status_code == 202
    s.wait_run(second["run_id"])


def test_a_trigger_whose_flow_cannot_start_records_why_and_stays_enabled(
    tserver: tuple[Server, Clock],
) -> None:
    s, clock = tserver
    now = clock.now()
    # A trigger for a flow that is not stored is refused when it is created...
    r = s.client().post(
        "/api/v1/triggers",
        json={"name": "orphan", "flow": "no-such-flow", "schedule": {"every": 60}},
    )
    assert r.status_code == 422 and "no stored flow is named 'no-such-flow'" in r.json()["detail"]
    # ...and one whose run cannot start (here: a parameter the flow does not have) records
    # why at each fire.
    add_flow(s, numbers_flow("orphan-flow"))
    add_trigger(
        s,
        {"name": "orphan", "flow": "orphan-flow", "params": {"nope": 1}, "schedule": {"every": 60}},
    )
    clock.set(now + 60.5)
    # A fire is recorded "claimed" before its run is started (or fails to start): wait for
    # it to settle, not merely to appear.
    fire = wait_for(
        "the failed fire",
        lambda: [f for f in history(s, "orphan") if f["status"] != "claimed"],
    )[0]
    assert fire["status"] == "failed"
    assert "unknown parameter 'nope'" in fire["reason"]
    shown = s.client().get("/api/v1/triggers/orphan").json()
    assert shown["enabled"] is True and shown["last_fire"]["status"] == "failed"
    assert shown["next_fire_at"] == now + 120


def test_the_api_refuses_bad_triggers_with_problem_details(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    api = s.client()
    r = api.post(
        "/api/v1/triggers",
        json={"name": "bad", "flow": "f", "schedule": {"cron": "* * *"}, "overlap": "x"},
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    fields = {e.get("field") for e in r.json()["errors"]}
    assert {"schedule.cron", "overlap"} <= fields
    r = api.post(
        "/api/v1/triggers",
        json={"name": "evil", "flow": "f", "on": {"run": {}}, "when": "event.__class__"},
    )
    assert r.status_code == 422 and "private attribute" in r.text
    ok = {"name": "twice", "flow": "f", "schedule": {"every": 60}}
    assert api.post("/api/v1/triggers", json=ok).status_code == 201
    r = api.post("/api/v1/triggers", json=ok)
    assert r.status_code == 409 and "exists already" in r.json()["detail"]
    assert api.patch("/api/v1/triggers/twice", json={"enabled": 1, "x": 2}).status_code == 422
    assert api.get("/api/v1/triggers/nope").status_code == 404
    assert api.get("/api/v1/triggers/nope/history").status_code == 404
    assert api.delete("/api/v1/triggers/twice").status_code == 204
    assert api.delete("/api/v1/triggers/twice").status_code == 404
    assert s.client(auth=False).get("/api/v1/triggers").status_code == 401


def test_a_trigger_is_found_by_id_too(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    api = s.client()
    created = add_trigger(s, {"name": "by-id", "flow": "f", "on": {"artifact": {"name": "x"}}})
    assert created["kind"] == "event" and created["next_fire_at"] is None
    assert api.get(f"/api/v1/triggers/{created['id']}").json()["name"] == "by-id"
    off = api.patch(f"/api/v1/triggers/{created['id']}", json={"enabled": False}).json()
    assert off["enabled"] is False
