"""FedAvgM, FedAdagrad, q-FedAvg, Krum, Multi-Krum and the clipped mean against numbers
worked out by hand from the papers' (and Flower's published) formulas; the server runs
mean-only strategies over a DP or secure aggregate exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flowfed.fl import AggregationError, Update, make_strategy
from flowfed.fl.server import FederatedServer, combination_problems


def up(node: str, values: list[float], n: int = 1, **metrics: float) -> Update:
    return Update(node, [np.array(values, dtype=np.float64)], n, dict(metrics))


def test_fedavgm_two_steps_by_hand() -> None:
    # Flower's FedAvgM: g = x - avg; v = g (round 1), v = m·v + g after; x ← x - lr·v.
    opt = make_strategy("fedavgm", server_learning_rate=0.5, server_momentum=0.9)
    x = opt.aggregate([up("a", [2.0]), up("b", [4.0])], global_weights=[np.array([0.0])])
    assert x[0].tolist() == [1.5]  # g = -3, v = -3, x = 0 + 1.5
    x = opt.aggregate([up("a", [1.5]), up("b", [3.5])], global_weights=x)
    # g = 1.5 - 2.5 = -1, v = 0.9·-3 - 1 = -3.7, x = 1.5 + 1.85 = 3.35
    assert x[0].tolist() == pytest.approx([3.35])
    plain = make_strategy("fedavgm")  # lr 1, momentum 0: FedAvg
    out = plain.aggregate([up("a", [2.0], 1), up("b", [5.0], 2)], global_weights=[np.zeros(1)])
    assert out[0].tolist() == pytest.approx([4.0])


def test_fedadagrad_two_steps_by_hand() -> None:
    opt = make_strategy("fedadagrad", eta=0.1, tau=0.01)
    x0 = [np.array([0.0])]
    x1 = opt.aggregate([up("a", [1.0])], global_weights=x0)
    v1 = 0.01**2 + 1.0
    assert x1[0][0] == pytest.approx(0.1 * 1.0 / (np.sqrt(v1) + 0.01))
    x2 = opt.aggregate([up("a", [x1[0][0] + 2.0])], global_weights=x1)
    v2 = v1 + 4.0  # m = Δ (beta1 = 0)
    assert x2[0][0] == pytest.approx(x1[0][0] + 0.1 * 2.0 / (np.sqrt(v2) + 0.01))


def test_qfedavg_by_flowers_formulas() -> None:
    q, lr = 0.5, 0.1
    x = np.array([1.0, -1.0])
    ups = [up("a", [0.8, -0.7], initial_loss=0.4), up("b", [1.3, -1.2], initial_loss=1.6)]
    num = np.zeros(2)
    den = 0.0
    for u in ups:  # Flower's QFedAvg.aggregate_fit / aggregate_qffl, written out
        loss = u.metrics["initial_loss"] + 1e-10
        grad = (x - u.weights[0]) / lr
        num += loss**q * grad
        den += q * loss ** (q - 1) * float(np.sum(grad**2)) + loss**q / lr
    want = x - num / den
    got = make_strategy("qfedavg", q=q, learning_rate=lr).aggregate(ups, global_weights=[x])
    np.testing.assert_allclose(got[0], want, rtol=1e-12)
    with pytest.raises(AggregationError, match="node 'a' reported no initial_loss"):
        make_strategy("qfedavg").aggregate([up("a", [1.0])], global_weights=[np.zeros(1)])


def test_krum_and_multikrum_by_hand() -> None:
    ups = [up("a", [0.0, 0.0]), up("b", [1.0, 0.0]), up("c", [0.0, 2.0]), up("d", [50.0, 50.0])]
    # f = 1, n - f - 2 = 1 neighbour: a: min(1, 4, 5000) = 1; b: min(1, 5, ...) = 1;
    # c: min(4, 5, ...) = 4; d: min(5000, 4901, 4804) = 4804.
    assert make_strategy("krum", num_malicious=1).aggregate(ups)[0].tolist() == [0.0, 0.0]
    kept = make_strategy("multikrum", num_malicious=1).aggregate(ups)  # a, b, c
    np.testing.assert_allclose(kept[0], [1 / 3, 2 / 3])
    two = make_strategy("multikrum", num_malicious=1, num_to_keep=2).aggregate(ups)
    np.testing.assert_allclose(two[0], [0.5, 0.0])


def test_clipped_mean_by_hand() -> None:
    x = [np.array([0.0, 0.0])]
    ups = [up("a", [3.0, 4.0]), up("b", [0.0, 1.0]), up("c", [-30.0, -40.0], n=1000)]
    fixed = make_strategy("clipped_mean", clip_norm=1.0).aggregate(ups, global_weights=x)
    np.testing.assert_allclose(fixed[0], [0.0, 1 / 3], atol=1e-15)
    # adaptive: clip to the median norm (5): a and b untouched, c scaled to norm 5
    adaptive = make_strategy("clipped_mean").aggregate(ups, global_weights=x)
    np.testing.assert_allclose(adaptive[0], [0.0, 1 / 3], atol=1e-15)


def _settings(**kw: object) -> SimpleNamespace:
    base = dict(strategy="fedavg", strategy_config={}, privacy=None, rounds=3,
                secure_aggregation=False, fraction_fit=1.0)  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_server_runs_fedadam_on_the_private_mean() -> None:
    """DP (no noise, to compare) then Adam by hand: the strategy is not swapped."""
    privacy = SimpleNamespace(clip_norm=1.0, noise_multiplier=0.0, delta=1e-5)
    server = FederatedServer(
        _settings(strategy="fedadam", strategy_config={"eta": 0.1, "tau": 0.01}, privacy=privacy),
        participants=2, per_round=2,
    )  # fmt: skip
    x = [np.zeros(2)]
    ups = [up("a", [3.0, 4.0], 10), up("b", [0.0, 0.5], 1)]
    got = server.aggregate(1, ups, x)[0]
    delta = np.array([0.6 + 0.0, 0.8 + 0.5]) / 2  # clipped, unweighted mean change
    m = 0.1 * delta
    v = 0.99 * 0.01**2 + 0.01 * delta**2
    np.testing.assert_allclose(got, 0.1 * m / (np.sqrt(v) + 0.01))


def test_server_runs_mean_strategies_on_a_secure_mean_exactly() -> None:
    for name, cfg in [("fedadam", {"eta": 0.1}), ("fedyogi", {}), ("fedavgm",
                      {"server_momentum": 0.5}), ("fedadagrad", {})]:  # fmt: skip
        server = FederatedServer(
            _settings(strategy=name, strategy_config=cfg, secure_aggregation=True),
            participants=2, per_round=2,
        )  # fmt: skip
        ups = [up("a", [1.0, 2.0], 3), up("b", [5.0, 0.0], 1)]
        mean = [np.array([2.0, 1.5])]  # Σ n w / Σ n, what secure FedAvg reveals
        secure = server.aggregate_secure_mean(1, mean, 4, [np.zeros(2)])
        reference = make_strategy(name, **cfg).aggregate(ups, global_weights=[np.zeros(2)])
        np.testing.assert_allclose(secure[0], reference[0], rtol=1e-12)


def test_combination_rules() -> None:
    for name in ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm"):
        assert combination_problems(name, secure_aggregation=True, privacy=True) == []
    for name in ("median", "trimmed_mean", "krum", "multikrum", "clipped_mean", "qfedavg"):
        assert len(combination_problems(name, secure_aggregation=True, privacy=True)) == 2
    with pytest.raises(AggregationError, match="only ever learns their sum"):
        FederatedServer(_settings(strategy="median", secure_aggregation=True), participants=3,
                        per_round=3)  # fmt: skip
