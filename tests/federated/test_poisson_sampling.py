"""Issue 21: Poisson sampling (``sampling: poisson``) and the accountant that matches it.

References: the sampler's moments against the binomial's (hand-worked: mean n·q,
variance n·q·(1-q); fixed-size sampling has variance 0), the accountant against
dp-accounting's ``PoissonSampledDpEvent`` composed directly, and the fixed-denominator
private mean against hand-worked numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as S

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from flowfed.fl import PrivacyAccountant, Update
from flowfed.fl.server import FederatedServer
from flowfed.plan.federated import sample_poisson
from tests.federated.conftest import EXAMPLE, errors, run_json, tasks_of, write_flow


def reference_poisson(z: float, q: float, rounds: int, delta: float) -> float:
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    return float(acc.get_epsilon(delta))


def test_poisson_sampler_has_binomial_moments() -> None:
    parts = [(f"h{i}", None) for i in range(10)]
    rng = np.random.default_rng(7)
    draws = [sample_poisson(parts, 0.3, rng) for _ in range(20_000)]
    sizes = np.array([len(d) for d in draws])
    assert sizes.mean() == pytest.approx(3.0, abs=0.05)
    assert sizes.var() == pytest.approx(10 * 0.3 * 0.7, abs=0.08)
    assert sizes.min() == 0 and sizes.max() >= 7  # sizes vary, empty rounds happen
    share = {p[0]: 0 for p in parts}
    for d in draws:
        for p in d:
            share[p[0]] += 1
    assert all(v / len(draws) == pytest.approx(0.3, abs=0.02) for v in share.values())


def test_poisson_accountant_matches_dp_accounting() -> None:
    acc = PrivacyAccountant(1.0, sample_rate=0.3, delta=1e-5)
    assert acc.step(30) == pytest.approx(reference_poisson(1.0, 0.3, 30, 1e-5), rel=1e-12)
    assert "Poisson sampling at rate 0.3" in acc.describe()


def test_private_mean_divides_by_the_expected_count() -> None:
    # 4 participants, q = 0.5: expected 2 per round. One node drew, change 1.0 (under
    # clip 10), no noise: the fixed-denominator mean change is 1.0 / 2 = 0.5.
    settings = S(strategy="fedavg", strategy_config={}, rounds=1, secure_aggregation=False,
                 fraction_fit=0.5, sampling="poisson",
                 privacy=S(clip_norm=10.0, noise_multiplier=0.0, delta=1e-5))  # fmt: skip
    server = FederatedServer(settings, participants=4, per_round=2)
    new = server.aggregate(1, [Update("a", [np.array([1.0])], 5)], [np.array([0.0])])
    assert new[0].tolist() == [0.5]
    settings.sampling = "fixed"  # fixed-size sampling divides by the drawn count
    fixed = FederatedServer(settings, participants=4, per_round=2)
    assert fixed.aggregate(1, [Update("a", [np.array([1.0])], 5)], [np.array([0.0])])[
        0
    ].tolist() == [1.0]


@pytest.fixture(scope="module")
def ten_hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ten")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(out), "--hospitals", "10",
         "--quiet"], check=True,
    )  # fmt: skip
    return out


def test_poisson_dp_run(ten_hospitals: Path, tmp_path: Path) -> None:
    z, q, rounds = 1.0, 0.3, 6
    flow = write_flow(
        tmp_path, ten_hospitals / "nodes.yaml", config={"rounds": rounds},
        federated={"fraction_fit": q, "sampling": "poisson", "min_nodes": 1,
                   "privacy": {"clip_norm": 1.0, "noise_multiplier": z, "delta": 1e-5}},
    )  # fmt: skip
    result = run_json(
        ["run", str(flow), "--simulate", "-p", "datasets=*:breast"], tmp_path / "home"
    )
    assert result["status"] == "success", errors(result)
    privacy = result["summary"]["privacy"]
    # every round counts, the skipped ones too
    assert privacy["epsilon"] == pytest.approx(reference_poisson(z, q, rounds, 1e-5), rel=1e-9)
    assert privacy["sampling"] == "Poisson, rate 0.3"
    trained = [t for t in tasks_of(result, "Federated Training") if t.get("round")
               and t["node"] != "local"]  # fmt: skip
    per_round = [sum(1 for t in trained if t["round"] == r) for r in range(1, rounds + 1)]
    # seed 0 draws these sizes (a fixed-size sample would be [3] * 6)
    assert len(set(per_round)) > 1, per_round
