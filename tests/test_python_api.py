"""The Python API: flows built in code run exactly like flow files."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowfed import Flow, FlowError, Lazy, Step, load_artifact, prepare, run_flow, tool
from flowfed.db import Database


class Opaque:
    """A config value with no canonical encoding."""


@tool(name="api_source", version="1", type="database-adapter")
def api_source(*, n: int = 3) -> bytes:
    return b"x" * n


@tool(name="api_peek", version="1", type="evaluation")
def api_peek(blob: Lazy) -> dict:
    # Touches only metadata: the handle must not read the artifact's bytes.
    return {"size": blob.size, "hash": blob.hash, "reads": blob.reads}  # type: ignore[attr-defined]


@tool(name="api_opaque", version="1", type="evaluation")
def api_opaque(blob: bytes, *, thing: Opaque) -> dict:
    return {"n": len(blob)}


def _flow(*steps: Step) -> Flow:
    return Flow(name="api", steps=[Step(name="src", tool="api_source", outputs=["blob"]), *steps])


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    return {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "artifacts_url": str(tmp_path / "artifacts"),
    }


def test_a_lazy_input_is_never_read_unless_loaded(stores: dict[str, str]) -> None:
    flow = _flow(
        Step(name="peek", tool="api_peek", inputs={"blob": "blob"}, outputs=["info"], cache=False)
    )
    run_flow(flow, **stores)
    # Second run: the source is cached, so its value is not in memory; only a handle exists.
    result = run_flow(flow, **stores)
    assert result.status == "success"
    db = Database(stores["database_url"])
    blob = db.get_artifact("blob")
    assert blob is not None
    value = load_artifact("info:2", **stores)
    assert value == {"size": 3, "hash": blob["hash"], "reads": 0}


def test_config_that_cannot_be_hashed_turns_caching_off_and_says_so(
    stores: dict[str, str],
) -> None:
    step = Step(name="o", tool="api_opaque", inputs={"blob": "blob"}, params={"thing": Opaque()})
    graph = prepare(_flow(step)).graph
    from flowfed.api import make_engine

    for expected in ("finished", "finished"):  # never cached, however often it runs
        engine = make_engine(**stores)
        result = engine.run(graph)
        task = result.view.tasks["o"][0]
        assert str(task.state) == expected and not task.cached
        assert task.message and "caching off" in task.message
    db = Database(stores["database_url"])
    logs = db.task_logs(result.view.tasks["o"][0].id)
    assert any("cannot be hashed canonically" in line["message"] for line in logs)


def test_python_flows_are_validated_like_files() -> None:
    with pytest.raises(FlowError, match="unknown tool 'nope'"):
        prepare(_flow(Step(name="x", tool="nope")))


def test_a_flow_runs_in_memory_for_its_own_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/flows.md, "Testing a flow": an in-memory catalog and store, nothing on disk.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWFED_HOME", str(tmp_path / "home"))
    flow = _flow(Step(name="peek", tool="api_peek", inputs={"blob": "blob"}, outputs=["info"]))
    memory = {"database_url": "sqlite://", "artifacts_url": "memory://flowfed-api-test"}
    first = run_flow(flow, **memory)
    assert first.status == "success", first.error
    assert first.value("info") == {"size": 3, "hash": first.outputs["blob"].hash, "reads": 0}
    rows = {a["name"]: a for a in first.to_dict()["artifacts"]}
    assert set(rows) == {"blob", "info"}
    assert all(len(r["hash"]) == 64 and r["version"] == 1 for r in rows.values())
    assert [t.state for t in first.view.tasks["peek"]] == ["finished"]
    # Each run gets a catalog of its own: nothing is cached from the first run, and the
    # versions start again at 1.
    second = run_flow(flow, **memory)
    assert second.status == "success"
    assert not any(t["cached"] for s in second.to_dict()["steps"] for t in s["tasks"])
    assert {a["version"] for a in second.to_dict()["artifacts"]} == {1}
    assert list(tmp_path.iterdir()) == []


def test_any_fsspec_url_can_hold_the_artifacts(tmp_path: Path) -> None:
    from flowfed.artifacts import INLINE_MAX_BYTES

    stores = {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "artifacts_url": "memory://flowfed-test-artifacts",
    }
    big = Flow(
        name="big",
        steps=[
            Step(
                name="src", tool="api_source", outputs=["blob"], params={"n": INLINE_MAX_BYTES * 2}
            )
        ],
    )
    result = run_flow(big, **stores)
    assert result.status == "success"
    assert result.artifacts[0]["uri"].startswith("memory://")
    assert load_artifact("blob", **stores) == b"x" * INLINE_MAX_BYTES * 2


def test_small_outputs_live_in_the_catalog_and_large_ones_in_the_store(
    stores: dict[str, str],
) -> None:
    from flowfed.artifacts import INLINE_MAX_BYTES

    flow = Flow(
        name="sizes",
        steps=[
            Step(name="small", tool="api_source", params={"n": 10}, outputs=["tiny"]),
            Step(
                name="big", tool="api_source", params={"n": INLINE_MAX_BYTES + 1}, outputs=["huge"]
            ),
        ],
    )
    result = run_flow(flow, **stores)
    uris = {a["name"]: a["uri"] for a in result.artifacts}
    assert uris["tiny"].startswith("db:blobs/")
    assert uris["huge"].startswith("file://")
    assert load_artifact("tiny", **stores) == b"x" * 10
    assert load_artifact("huge", **stores) == b"x" * (INLINE_MAX_BYTES + 1)
    assert len(list(Path(stores["artifacts_url"]).rglob("*"))) >= 1


def test_run_result_gives_artifact_values(stores: dict[str, str]) -> None:
    flow = _flow(Step(name="peek", tool="api_peek", inputs={"blob": "blob"}, outputs=["info"]))
    first = run_flow(flow, **stores)
    assert first.value("blob") == b"xxx"  # computed in this process
    info = first.value("info")
    assert info["size"] == 3
    with pytest.raises(KeyError, match=r"no artifact named 'nope' \(it has: blob, info\)"):
        first.value("nope")
    # A cached re-run holds no values in memory: they come back from the catalog.
    again = run_flow(flow, **stores)
    assert again.value("blob") == b"xxx" and again.value("info") == info
    assert {a["name"] for a in again.artifacts} == {"blob", "info"}
