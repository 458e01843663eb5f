"""The plain-data call a cluster worker runs: large values go through the artifact store."""

from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from flowfed import tool
from flowfed.artifacts import ArtifactStore
from flowfed.executors.worker import StoredValue, WorkerCall, run_call, ship, unship_result
from flowfed.tools.core import get_registry


def _local_call(tool: str) -> WorkerCall:
    """A call of ``tool`` (``file.py:function``) with no inputs, config or store."""
    return WorkerCall(tool=tool, config={}, args={}, task_id="t", step="s", node="local")


def test_a_value_over_the_threshold_travels_as_a_store_hash(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    big = np.arange(10_000, dtype=np.int64)
    shipped = ship(big, store, 1024, False)
    assert isinstance(shipped, StoredValue)
    assert store.exists(shipped.hash)
    assert np.array_equal(shipped.load(), big)
    assert ship([1, 2, 3], store, 1024, False) == [1, 2, 3]  # small: inline


def test_a_worker_reads_large_inputs_and_writes_large_outputs_through_the_store(
    tmp_path: Path,
) -> None:
    (tmp_path / "neg_tools.py").write_text(
        "import numpy as np\n"
        "from flowfed import tool\n"
        "@tool(version='1')\n"
        "def negate(x: np.ndarray) -> np.ndarray:\n"
        "    return -x\n"
    )
    store = ArtifactStore(str(tmp_path / "store"))
    arg = ship(np.ones(5_000), store, 1024, False)
    call = WorkerCall(
        tool=f"{tmp_path / 'neg_tools.py'}:negate",
        config={},
        args={"x": arg},
        task_id="t1",
        step="s",
        node="local",
        store=store.root,
        inline_max=1024,
    )
    result = run_call(call)
    assert result.error is None
    assert isinstance(result.value, StoredValue)
    assert np.array_equal(unship_result(result.value), -np.ones(5_000))


def test_a_tool_error_comes_back_as_data_with_telemetry(tmp_path: Path) -> None:
    (tmp_path / "bad_tools.py").write_text(
        "from flowfed import tool, Context\n"
        "@tool(version='1')\n"
        "def boom(ctx: Context) -> int:\n"
        "    ctx.log('about to fail')\n"
        "    raise KeyError('missing')\n"
    )
    call = _local_call(f"{tmp_path / 'bad_tools.py'}:boom")
    result = run_call(call)
    assert result.error is not None
    message, tb, etype = result.error
    assert message == "KeyError: 'missing'" and etype == "KeyError" and "raise KeyError" in tb
    logs = [p["message"] for k, p in result.telemetry if k == "log"]
    assert logs == ["about to fail"]
    # A failed attempt still reports what it used, once, after the log.
    assert [k for k, _ in result.telemetry][-1] == "resources"
    assert result.telemetry[-1][1]["peak_rss_mb"] > 0


def test_loading_tools_while_another_thread_imports(tmp_path: Path) -> None:
    # A cluster worker runs tasks on several threads of one process: one of them may
    # import a module (adding it to sys.modules) while another loads a tools file, first
    # or edited. Thread switches every microsecond make the overlap likely enough here
    # that the unfixed worker failed on every run.
    stop = threading.Event()

    def importer() -> None:
        i = 0
        while not stop.is_set():
            name = f"flowfed_test_fake_module_{i % 20}"
            if sys.modules.pop(name, None) is None:
                sys.modules[name] = types.ModuleType(name)
            i += 1

    thread = threading.Thread(target=importer, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread.start()
    results = []
    try:
        for k in range(30):
            # A new file, then the same file edited: both load paths of the worker.
            for path in (tmp_path / f"tools_{k}.py", tmp_path / "edited_tools.py"):
                path.write_text(f"def value() -> int:\n    return {10**k}\n")
                results.append((run_call(_local_call(f"{path}:value")), 10**k))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
        for i in range(20):
            sys.modules.pop(f"flowfed_test_fake_module_{i}", None)
    assert [(r.error, r.value) for r, _ in results] == [(None, v) for _, v in results]


def test_a_tools_file_loading_on_one_thread_keeps_other_threads_registrations(
    tmp_path: Path,
) -> None:
    # The worker loads a flow's tools file into a private registry. A tool running on
    # another thread meanwhile may import a module that registers tools: those belong in
    # the process-wide registry, not in the private one of the file being loaded.
    (tmp_path / "sync_points.py").write_text(
        "import threading\nloading = threading.Event()\ngo = threading.Event()\n"
    )
    (tmp_path / "slow_tools.py").write_text(
        "import sync_points\n"
        "from flowfed import tool\n"
        "sync_points.loading.set()\n"
        "sync_points.go.wait(10)\n"
        "@tool(version='1')\n"
        "def slow_value() -> int:\n"
        "    return 7\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import sync_points  # type: ignore[import-not-found]

        call = _local_call(f"{tmp_path / 'slow_tools.py'}:slow_value")
        box: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: box.update(result=run_call(call)))
        loader.start()
        assert sync_points.loading.wait(10)
        # The tools file is half imported on the loader thread: register a tool here.
        name = f"registered_beside_a_load_{os.getpid()}"
        tool(version="1", name=name)(lambda: 1)
        sync_points.go.set()
        loader.join(10)
        registry = get_registry()
        try:
            assert registry.find(name) is not None
            assert registry.find("slow_value") is None  # the file's tools stay private
            assert box["result"].error is None and box["result"].value == 7
        finally:
            registry._tools.pop(name, None)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sync_points", None)
