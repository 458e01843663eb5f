"""SCAFFOLD and per-client state, through the CLI, against numbers computed here.

The reference below re-implements, in plain numpy and independently of flowfed, full-batch
logistic-regression gradient descent and SCAFFOLD's option II (Karimireddy et al. 2020):
``y ← y - η(g(y) - c_i + c)`` for K steps, ``c_i⁺ = c_i - c + (x - y_i)/(Kη)``,
``x += η_g·mean(y_i - x)``, ``c += (|S|/N)·mean(c_i⁺ - c_i)``. Round 2 only matches when
each node really kept its ``c_i`` from round 1 (``ctx.client_state``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from flowfed.api import load_artifact
from tests.federated.conftest import errors, run_cli, run_json


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _local(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, steps: int, lr: float,
           corr: tuple[np.ndarray, float]) -> tuple[np.ndarray, float]:  # fmt: skip
    for _ in range(steps):
        dz = (_sig(x @ w + b) - y) / len(y)
        w, b = w - lr * (x.T @ dz + corr[0]), b - lr * (dz.sum() + corr[1])
    return w, b


def reference(nodes: list[tuple[np.ndarray, np.ndarray]], rounds: int, steps: int, lr: float,
              scaffold: bool, server_lr: float = 1.0) -> tuple[np.ndarray, float]:  # fmt: skip
    """FedAvg (example-weighted) or SCAFFOLD, all nodes every round, from zeros."""
    d = nodes[0][0].shape[1]
    w, b = np.zeros(d), 0.0
    c = (np.zeros(d), 0.0)
    ci = [(np.zeros(d), 0.0) for _ in nodes]
    for _ in range(rounds):
        outs, deltas = [], []
        for i, (x, y) in enumerate(nodes):
            corr = (c[0] - ci[i][0], c[1] - ci[i][1]) if scaffold else (np.zeros(d), 0.0)
            wi, bi = _local(x, y, w, b, steps, lr, corr)
            new = (
                ci[i][0] - c[0] + (w - wi) / (steps * lr),
                ci[i][1] - c[1] + (b - bi) / (steps * lr),
            )
            deltas.append((new[0] - ci[i][0], new[1] - ci[i][1]))
            ci[i] = new
            outs.append((wi, bi, len(y)))
        if scaffold:
            w = w + server_lr * np.mean([o[0] - w for o in outs], axis=0)
            b = b + server_lr * float(np.mean([o[1] - b for o in outs]))
            share = len(nodes) / len(nodes)
            c = (c[0] + share * np.mean([dl[0] for dl in deltas], axis=0),
                 c[1] + share * float(np.mean([dl[1] for dl in deltas])))  # fmt: skip
        else:
            n = sum(o[2] for o in outs)
            w = sum(o[0] * o[2] for o in outs) / n
            b = sum(o[1] * o[2] for o in outs) / n
    return w, b


def write_case(folder: Path, nodes: dict[str, pd.DataFrame], *, rounds: int, epochs: int,
               lr: float, strategy: str, extra: dict[str, Any] | None = None,
               trainer: str = "flowfed.logistic_regression") -> Path:  # fmt: skip
    """A two-step flow: each node's table, then a federated logistic regression on it."""
    layout: dict[str, dict[str, str]] = {}
    for name, table in nodes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / name / "data.csv", index=False)
        layout[name] = {"data": f"{name}/data.csv"}
    (folder / "nodes.yaml").write_text(yaml.safe_dump({"nodes": layout}))
    flow = {
        "name": "Scaffold Check",
        "imports": ["flowfed.tools.library"],
        "nodes": "nodes.yaml",
        "config": {"datasets": [f"{n}:data" for n in nodes]},
        "steps": [
            {"name": "Load", "tool": "flowfed.node_dataset", "on": "each-dataset",
             "outputs": ["train"]},
            {"name": "Federated Training", "kind": "federated", "tool": trainer,
             "inputs": {"train": "train"}, "params": {"learning_rate": lr},
             "federated": {"rounds": rounds, "strategy": strategy, "local_epochs": epochs,
                           **(extra or {})},
             "outputs": ["model"]},
        ],
    }  # fmt: skip
    path = folder / "flow.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def final_model(result: dict[str, Any], home: Path) -> Any:
    return load_artifact(
        result["summary"]["model"]["id"],
        database_url=f"sqlite:///{home / 'flowfed.db'}",
        artifacts_url=str(home / "artifacts"),
    )


def _table(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"f1": x[:, 0], "f2": x[:, 1], "target": y.astype(int)})


# Two small nodes. A node agent's default policy releases a model only with at least 5
# rows and 0.33 parameters per row: SCAFFOLD releases 6 numbers (3 weights, 3 control
# changes), so each node has 20 rows.
_rng = np.random.default_rng(7)
TINY = {
    "alpha": (_rng.normal([1.0, 0.5], 1.0, (20, 2)).round(2), _rng.integers(0, 2, 20)),
    "beta": (_rng.normal([-1.0, 0.0], 1.0, (20, 2)).round(2), _rng.integers(0, 2, 20)),
}


def test_scaffold_two_rounds_match_hand_worked_numbers(tmp_path: Path) -> None:
    flow = write_case(
        tmp_path, {n: _table(x, y) for n, (x, y) in TINY.items()},
        rounds=2, epochs=3, lr=0.5, strategy="scaffold",
    )  # fmt: skip
    home = tmp_path / "home"
    result = run_json(["run", str(flow), "--simulate"], home)
    assert result["status"] == "success", errors(result)
    model = final_model(result, home)
    nodes = [(x, y.astype(float)) for x, y in TINY.values()]
    w, b = reference(nodes, rounds=2, steps=3, lr=0.5, scaffold=True)
    np.testing.assert_allclose(model.weights, w, rtol=0, atol=1e-12)
    assert abs(model.bias - b) < 1e-12
    # Not FedAvg's numbers (round 2's correction moved them), and not a run that forgot
    # c_i between rounds (round 2 with c_i = 0 gives others).
    fw, _ = reference(nodes, rounds=2, steps=3, lr=0.5, scaffold=False)
    assert np.max(np.abs(fw - w)) > 1e-3
    assert model.training["strategy"] == "scaffold"


@pytest.mark.parametrize("runner", ["inprocess", "subprocess", "sandbox"])
def test_scaffold_in_node_mode_keeps_c_i_in_each_agents_folder(tmp_path: Path, runner: str) -> None:
    """The same numbers with real node agents: the tool runs in the agent, in a child
    process or in the sandbox; each agent keeps its c_i under its own work folder."""
    if runner == "sandbox" and not _sandbox_sees_this_checkout():
        pytest.skip("the sandbox imports the installed flowfed, not this checkout")
    flow = write_case(
        tmp_path, {n: _table(x, y) for n, (x, y) in TINY.items()},
        rounds=2, epochs=3, lr=0.5, strategy="scaffold",
    )  # fmt: skip
    home = tmp_path / "home"
    result = run_json(["run", str(flow), "--node-runner", runner], home, timeout=900)
    assert result["status"] == "success", errors(result)
    nodes = [(x, y.astype(float)) for x, y in TINY.values()]
    w, b = reference(nodes, rounds=2, steps=3, lr=0.5, scaffold=True)
    model = final_model(result, home)
    np.testing.assert_allclose(model.weights, w, rtol=0, atol=1e-12)
    assert abs(model.bias - b) < 1e-12
    for node in TINY:
        assert len(list((home / "nodes" / node / "work" / "client_state").glob("*.npz"))) == 1


def _sandbox_sees_this_checkout() -> bool:
    """Whether the sandboxed interpreter (no PYTHONPATH) imports the flowfed under test."""
    import subprocess
    import sys

    import flowfed

    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", "import flowfed; print(flowfed.__file__)"],
                         env=env, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return bool(out) and Path(out).resolve() == Path(flowfed.__file__).resolve()


def _skewed(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, centre, n in (("east", [2.5, 1.0], 60), ("west", [-2.5, -1.0], 40)):
        x = rng.normal(centre, 1.0, (n, 2))
        p = _sig(x @ np.array([1.5, -1.0]) + 0.3)
        out[name] = (x, (rng.random(n) < p).astype(float))
    return out


def _pooled_loss(w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray) -> float:
    z = x @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def test_scaffold_beats_fedavg_on_non_iid_nodes(tmp_path: Path) -> None:
    """Two nodes whose features sit on opposite sides: 50 local steps drift FedAvg away
    from the pooled optimum (scikit-learn's unpenalized fit); SCAFFOLD corrects it."""
    data = _skewed(3)
    x = np.vstack([v[0] for v in data.values()])
    y = np.concatenate([v[1] for v in data.values()])
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    best = _pooled_loss(sk.coef_[0], float(sk.intercept_[0]), x, y)
    gaps = {}
    for strategy in ("fedavg", "scaffold"):
        folder = tmp_path / strategy
        folder.mkdir()
        flow = write_case(
            folder, {n: _table(*v) for n, v in data.items()},
            rounds=30, epochs=50, lr=0.5, strategy=strategy,
        )  # fmt: skip
        home = folder / "home"
        result = run_json(["run", str(flow), "--simulate"], home)
        assert result["status"] == "success", errors(result)
        model = final_model(result, home)
        gaps[strategy] = _pooled_loss(model.weights, model.bias, x, y) - best
    assert gaps["scaffold"] < 0.002, gaps  # converged to the pooled optimum
    assert gaps["fedavg"] > 10 * gaps["scaffold"], gaps  # FedAvg stays off by client drift


def test_client_state_starts_fresh_per_run_unless_kept(tmp_path: Path) -> None:
    """A second run of one round equals the first (fresh c_i), unless the step keeps its
    client state: then round 1 of run 2 starts from run 1's c_i."""
    tables = {n: _table(x, y) for n, (x, y) in TINY.items()}
    home = tmp_path / "home"
    flow = write_case(tmp_path, tables, rounds=1, epochs=3, lr=0.5, strategy="scaffold")
    first = final_model(run_json(["run", str(flow), "--simulate"], home), home).weights
    again = final_model(run_json(["run", str(flow), "--simulate"], home), home).weights
    np.testing.assert_array_equal(first, again)
    kept = write_case(tmp_path, tables, rounds=1, epochs=3, lr=0.5, strategy="scaffold",
                      extra={"client_state": "keep"})  # fmt: skip
    one = final_model(run_json(["run", str(kept), "--simulate"], home), home).weights
    np.testing.assert_array_equal(one, first)  # nothing kept yet: same as a fresh run
    two = final_model(run_json(["run", str(kept), "--simulate"], home), home).weights
    assert np.max(np.abs(two - one)) > 1e-6  # run 2 started from run 1's c_i
    assert list((home / "simulated-nodes" / "alpha" / "client_state").glob("*.npz"))


TRAINER_WITHOUT_HOOK = """
import pandas as pd
from flowfed.tools import Context, tool
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression


@tool(name="test.plain_trainer", version="1.0", type="analysis")
def plain_trainer(train: pd.DataFrame, ctx: Context,
                  global_model: LogisticRegressionModel | None = None, *,
                  epochs: int = 5, learning_rate: float = 0.1) -> LogisticRegressionModel:
    return logistic_regression(train, ctx, global_model, epochs=epochs,
                                           learning_rate=learning_rate)
"""


@pytest.mark.parametrize(
    ("extra", "trainer", "expected"),
    [
        ({}, "test.plain_trainer",
         "trainer 'test.plain_trainer' has no 'scaffold_c' config field"),
        ({"secure_aggregation": True}, None, "secure aggregation masks only the model"),
        ({"privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0}}, None,
         "client-level DP would not cover it"),
    ],
)  # fmt: skip
def test_scaffold_refused_at_build_time(
    tmp_path: Path, extra: dict[str, Any], trainer: str | None, expected: str
) -> None:
    (tmp_path / "plain.py").write_text(TRAINER_WITHOUT_HOOK)
    flow = write_case(
        tmp_path, {n: _table(x, y) for n, (x, y) in TINY.items()}, rounds=1, epochs=1,
        lr=0.5, strategy="scaffold", extra=extra, trainer=trainer or "flowfed.logistic_regression",
    )  # fmt: skip
    spec = yaml.safe_load(flow.read_text())
    spec["imports"].append(str(tmp_path / "plain.py"))
    flow.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
