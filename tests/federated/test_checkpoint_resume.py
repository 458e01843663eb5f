"""Issue 21, checkpointed rounds: a run killed (SIGKILL) mid-training resumes after its
last checkpointed round and ends where an uninterrupted run of the same seed ends.

Real processes: ``flowfed run`` with its local node agents is killed with its whole
process group once the catalog holds a few round checkpoints, then ``flowfed run
--resume RUN_ID`` finishes it. The reference is a separate uninterrupted run. Without
DP the final weights agree to 1e-12 (the node agents answer in any order, so a sum may
round differently in its last bit); with DP, whose noise is fresh CSPRNG output by
design, the accountant must go on from the checkpoint: ε after resuming equals
dp-accounting's ε for all the rounds, and no round before the checkpoint ran twice.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from flowfed.api import load_artifact
from tests.federated.conftest import errors, run_json, write_flow

# The node agents' sandbox imports the installed flowfed; a worktree under test runs
# its own tree through PYTHONPATH, which the subprocess runner keeps.
RUNNER = ["--node-runner", "subprocess"] if os.environ.get("PYTHONPATH") else []


def kill_after(flow: Path, home: Path, checkpoints: int) -> str:
    """Start ``flowfed run``, SIGKILL its process group once ``checkpoints`` round
    checkpoints are in the catalog; return the run's id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    env["FLOWFED_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfed", "run", str(flow), "--json", *RUNNER],
        env=env, cwd=home.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    db = home / "flowfed.db"
    deadline = time.monotonic() + 600
    try:
        while True:
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr}"
            assert time.monotonic() < deadline, "no checkpoints within 10 minutes"
            time.sleep(0.2)
            try:
                with sqlite3.connect(db) as conn:
                    n = conn.execute(
                        "select count(*) from artifacts where name = 'model.checkpoint'"
                    ).fetchone()[0]
            except sqlite3.Error:
                continue
            if n >= checkpoints:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(db) as conn:
        (run_id, status), *more = conn.execute("select id, status from runs").fetchall()
    assert not more and status == "running", status
    return str(run_id)


def model_of(home: Path, result: dict[str, Any]) -> Any:
    return load_artifact(
        result["summary"]["model"]["id"],
        database_url=f"sqlite:///{home / 'flowfed.db'}",
        artifacts_url=str(home / "artifacts"),
    )


def round_tasks(home: Path, r: int) -> list[str]:
    with sqlite3.connect(home / "flowfed.db") as conn:
        rows = conn.execute(
            "select node from tasks where step = 'Federated Training' and round = ? "
            "and tool = 'flowfed.logistic_regression'",
            (r,),
        ).fetchall()
    return sorted(n for (n,) in rows)


def resumed_after(home: Path) -> int:
    with sqlite3.connect(home / "flowfed.db") as conn:
        (msg,) = conn.execute(
            "select message from logs where message like 'resumed after round %'"
        ).fetchone()
    return int(msg.split()[3].split("'")[0])


def test_killed_run_resumes_after_its_last_round(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 8},
        federated={"strategy": "fedadam", "strategy_config": {"eta": 0.05},
                   "early_stopping": {"metric": "loss", "patience": 50}},
    )  # fmt: skip
    home = tmp_path / "home"
    run_id = kill_after(flow, home, checkpoints=3)
    result = run_json(["run", str(flow), "--resume", run_id[:12], *RUNNER], home, timeout=900)
    assert result["status"] == "success", errors(result)
    assert result["run_id"] == run_id and result["summary"]["rounds"] == 8
    k = resumed_after(home)
    assert 3 <= k < 8
    assert round_tasks(home, 1) == ["hospital-a", "hospital-b", "hospital-c"]  # not re-run
    reference = run_json(["run", str(flow), *RUNNER], tmp_path / "ref", timeout=900)
    assert reference["status"] == "success", errors(reference)
    got = model_of(home, result).get_weights()
    want = model_of(tmp_path / "ref", reference).get_weights()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
    # The global model's facts count every round, those before the restart too.
    assert model_of(home, result).training["rounds"] == 8


def test_dp_accountant_goes_on_from_the_checkpoint(hospitals: Path, tmp_path: Path) -> None:
    z, rounds = 1.0, 6
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": rounds},
        federated={"privacy": {"clip_norm": 1.0, "noise_multiplier": z, "delta": 1e-5}},
    )  # fmt: skip
    home = tmp_path / "home"
    run_id = kill_after(flow, home, checkpoints=2)
    result = run_json(["run", str(flow), "--resume", run_id, *RUNNER], home, timeout=900)
    assert result["status"] == "success", errors(result)
    k = resumed_after(home)
    assert 2 <= k < rounds
    for r in range(1, k + 1):  # the rounds before the checkpoint ran once
        assert round_tasks(home, r) == ["hospital-a", "hospital-b", "hospital-c"], r
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(z), rounds)
    want = float(acc.get_epsilon(1e-5))
    assert result["summary"]["privacy"]["epsilon"] == pytest.approx(want, rel=1e-9)
    # ε of only the resumed rounds would be smaller: the accountant was not reset
    short = rdp.RdpAccountant()
    short.compose(dp_accounting.GaussianDpEvent(z), rounds - k)
    assert float(short.get_epsilon(1e-5)) < want * 0.99


def test_resume_refuses_a_finished_run(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, hospitals / "nodes.yaml", config={"rounds": 1})
    home = tmp_path / "home"
    done = run_json(["run", str(flow), "--simulate"], home)
    assert done["status"] == "success", errors(done)
    from tests.federated.conftest import run_cli

    proc = run_cli(["run", str(flow), "--resume", done["run_id"], *RUNNER], home)
    assert proc.returncode != 0
    assert "ended (success)" in proc.stderr + proc.stdout


def test_resume_of_a_simulated_run_says_why_not(hospitals: Path, tmp_path: Path) -> None:
    from tests.federated.conftest import run_cli

    flow = write_flow(tmp_path, hospitals / "nodes.yaml", config={"rounds": 1})
    proc = run_cli(["run", str(flow), "--simulate", "--resume", "abc"], tmp_path / "home")
    assert proc.returncode != 0
    assert "simulated nodes keep their artifacts in this process's memory" in proc.stderr
