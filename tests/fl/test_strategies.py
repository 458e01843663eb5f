"""Every strategy against numbers worked out by hand, plus robustness and validation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from flowfed.fl import (
    STRATEGIES,
    AggregationError,
    FedAdam,
    FedProx,
    FedYogi,
    Update,
    Weights,
    fedavg,
    fedprox_term,
    make_strategy,
    median,
    trimmed_mean,
)
from flowfed.fl.strategies import BUILTIN_STRATEGIES


def up(node: str, *tensors: list[float], n: int = 1) -> Update:
    return Update(node, [np.array(t, dtype=np.float64) for t in tensors], num_examples=n)


# --------------------------------------------------------------------------- FedAvg / FedProx


def test_fedavg_weights_by_examples() -> None:
    # (1·[1, 2] + 3·[4, 8]) / 4 = [13/4, 26/4]
    out = fedavg([up("a", [1.0, 2.0], n=1), up("b", [4.0, 8.0], n=3)])
    np.testing.assert_allclose(out[0], [3.25, 6.5])


def test_fedavg_several_tensors_and_shapes() -> None:
    a = Update("a", [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([10.0])], 2)
    b = Update("b", [np.array([[3.0, 3.0], [3.0, 3.0]]), np.array([40.0])], 2)
    out = fedavg([a, b])
    np.testing.assert_allclose(out[0], [[2.0, 1.5], [1.5, 2.0]])
    np.testing.assert_allclose(out[1], [25.0])


def test_fedavg_keeps_float32() -> None:
    a = Update("a", [np.array([1.0], dtype=np.float32)])
    b = Update("b", [np.array([2.0], dtype=np.float32)])
    out = fedavg([a, b])
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[0], [1.5])


def test_fedprox_aggregates_like_fedavg_and_gives_proximal_gradient() -> None:
    ups = [up("a", [1.0], n=1), up("b", [4.0], n=2)]
    np.testing.assert_allclose(make_strategy("fedprox", mu=0.1).aggregate(ups)[0], [3.0])
    # mu · (w - w_global) = 0.5 · ([1, 3] - [0, 1]) = [0.5, 1.0]
    term = fedprox_term([np.array([1.0, 3.0])], [np.array([0.0, 1.0])], mu=0.5)
    np.testing.assert_allclose(term[0], [0.5, 1.0])
    prox = FedProx(mu=2.0).proximal_term([np.array([1.0])], [np.array([0.25])])
    np.testing.assert_allclose(prox[0], [1.5])
    with pytest.raises(AggregationError, match="mu"):
        FedProx(mu=-1.0)


# --------------------------------------------------------------------------- robust statistics


def test_median_odd_and_even() -> None:
    odd = median([up("a", [1.0, 10.0]), up("b", [2.0, 20.0]), up("c", [9.0, -5.0])])
    np.testing.assert_allclose(odd[0], [2.0, 10.0])
    even = median([up("a", [1.0, 4.0]), up("b", [3.0, 0.0])])
    np.testing.assert_allclose(even[0], [2.0, 2.0])


def test_median_ignores_example_counts() -> None:
    # A node claiming a million examples must not own the median.
    out = median([up("a", [1.0]), up("b", [2.0]), up("evil", [100.0], n=1_000_000)])
    np.testing.assert_allclose(out[0], [2.0])


def test_trimmed_mean_by_hand() -> None:
    ups = [up(n, [v]) for n, v in zip("abcde", [1.0, 2.0, 3.0, 4.0, 100.0], strict=True)]
    np.testing.assert_allclose(trimmed_mean(ups, beta=0.2)[0], [3.0])  # k=1: mean(2,3,4)
    np.testing.assert_allclose(trimmed_mean(ups, beta=0.4)[0], [3.0])  # k=2: just 3
    np.testing.assert_allclose(trimmed_mean(ups, beta=0.1)[0], [22.0])  # k=0: plain mean
    # Coordinates are trimmed independently.
    two = [up("a", [0.0, 9.0]), up("b", [5.0, 1.0]), up("c", [6.0, 2.0]), up("d", [7.0, 3.0])]
    np.testing.assert_allclose(trimmed_mean(two, beta=0.25)[0], [5.5, 2.5])


def test_poisoned_update_moves_fedavg_but_not_robust_strategies() -> None:
    honest = [up(n, [v, -v]) for n, v in zip("abcd", [1.0, 1.1, 0.9, 1.05], strict=True)]
    poisoned = [*honest, up("evil", [1e6, 1e6])]
    honest_mean = np.array([1.0125, -1.0125])

    avg = fedavg(poisoned)[0]
    med = median(poisoned)[0]
    trim = trimmed_mean(poisoned, beta=0.2)[0]

    # FedAvg: (4.05 + 1e6) / 5 ≈ 200000.81 — the attacker drags it away by ~2e5.
    np.testing.assert_allclose(avg[0], 200_000.81)
    assert np.all(np.abs(avg - honest_mean) > 1e5)
    # Median: sorted (0.9, 1, 1.05, 1.1, 1e6) → 1.05; second coordinate (-1.1 … 1e6) → -1.0.
    np.testing.assert_allclose(med, [1.05, -1.0])
    # Trimmed mean (k=1): mean(1, 1.05, 1.1) = 1.05 and mean(-1.05, -1, -0.9) = -0.9833…
    np.testing.assert_allclose(trim, [1.05, -2.95 / 3])
    assert np.all(np.abs(med - honest_mean) < 0.05)
    assert np.all(np.abs(trim - honest_mean) < 0.05)


# --------------------------------------------------------------------------- server optimizers

# Hand computation (Reddi et al. 2021, Alg. 2), η=0.1, β1=0.9, β2=0.99, τ=0.01, v₋₁=τ²=1e-4:
# x0 = [1, -2]; updates [2, -3]·1 and [1, -1]·3 → fedavg [1.25, -1.5] → Δ = [0.25, 0.5]
# m1 = 0.1·Δ = [0.025, 0.05]
# Adam: v1 = 0.99e-4 + 0.01·Δ² = [0.000724, 0.002599]
#       x1 = x0 + 0.1·m1/(√v1 + 0.01) = [1 + 0.0025/0.0369072, -2 + 0.005/0.0609804]
# Yogi: Δ² > v0, so v1 = 1e-4 + 0.01·Δ² = [0.000725, 0.0026]
# Step 2 with every node returning x1 (Δ = 0): m2 = 0.9·m1; Adam v2 = 0.99·v1, Yogi v2 = v1.
X0 = [np.array([1.0, -2.0])]
STEP1 = [up("a", [2.0, -3.0], n=1), up("b", [1.0, -1.0], n=3)]
SETTINGS = {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01}


def test_fedadam_two_steps_by_hand() -> None:
    opt = FedAdam(**SETTINGS)
    x1 = opt.step(X0, STEP1)
    np.testing.assert_allclose(x1[0], [1.0677373721720649, -1.9180064257980722], rtol=1e-12)
    assert opt.m is not None and opt.v is not None
    np.testing.assert_allclose(opt.m[0], [0.025, 0.05])
    np.testing.assert_allclose(opt.v[0], [0.000724, 0.002599])
    x2 = opt.step(x1, [Update("a", [x1[0].copy()])])
    np.testing.assert_allclose(x2[0], [1.1289246104767092, -1.8439016680641604], rtol=1e-12)


def test_fedyogi_two_steps_by_hand() -> None:
    opt = FedYogi(**SETTINGS)
    x1 = opt.step(X0, STEP1)
    np.testing.assert_allclose(x1[0], [1.06770329614269, -1.9180196097281443], rtol=1e-12)
    assert opt.v is not None
    np.testing.assert_allclose(opt.v[0], [0.000725, 0.0026])
    x2 = opt.step(x1, [Update("a", [x1[0].copy()])])
    np.testing.assert_allclose(x2[0], [1.128636262671111, -1.8442372584834743], rtol=1e-12)
    # Yogi keeps v when Δ = 0 (Adam would decay it by β2).
    np.testing.assert_allclose(opt.v[0], [0.000725, 0.0026])


def test_server_optimizer_needs_global_weights_and_stable_shapes() -> None:
    opt = make_strategy("fedadam")
    with pytest.raises(AggregationError, match="global weights"):
        opt.aggregate(STEP1)
    adam = FedAdam()
    adam.step(X0, STEP1)
    with pytest.raises(AggregationError, match="reset"):
        adam.step([np.zeros(3)], [up("a", [1.0, 2.0, 3.0])])
    adam.reset()
    adam.step([np.zeros(3)], [up("a", [1.0, 2.0, 3.0])])
    with pytest.raises(AggregationError, match="node 'a'"):
        FedYogi().step(X0, [up("a", [1.0])])
    with pytest.raises(AggregationError, match="beta1"):
        FedAdam(beta1=1.0)


# --------------------------------------------------------------------------- registry


def test_registry_has_every_strategy_by_name() -> None:
    assert {
        "fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "median",
        "trimmed_mean", "krum", "multikrum", "clipped_mean", "qfedavg", "scaffold",
    } == BUILTIN_STRATEGIES  # fmt: skip
    ups = [up("a", [1.0], n=1), up("b", [2.0], n=1), up("c", [9.0], n=2)]
    assert make_strategy("fedavg").aggregate(ups)[0].tolist() == [5.25]
    assert make_strategy("median").aggregate(ups)[0].tolist() == [2.0]
    assert make_strategy("trimmed_mean", beta=0.34).aggregate(ups)[0].tolist() == [2.0]
    yogi = make_strategy("fedyogi", eta=0.5)
    assert isinstance(yogi, FedYogi) and yogi.eta == 0.5
    for name in BUILTIN_STRATEGIES:
        assert STRATEGIES[name]().name == name


def test_make_strategy_errors_are_clear() -> None:
    with pytest.raises(AggregationError, match=r"unknown strategy 'fedsgd'.*fedavgm, fedprox"):
        make_strategy("fedsgd")
    with pytest.raises(AggregationError, match="takes no setting 'mu' \\(it takes none\\)"):
        make_strategy("median", mu=1)
    with pytest.raises(AggregationError, match=r"'lr'.*it takes eta, beta1, beta2, tau"):
        make_strategy("fedadam", lr=0.1)
    with pytest.raises(AggregationError, match="beta must be in"):
        make_strategy("trimmed_mean", beta=0.5)
    with pytest.raises(AggregationError, match="strategy 'trimmed_mean'"):
        make_strategy("trimmed_mean", beta="a lot")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("fn", [fedavg, median, trimmed_mean])
def test_validation_names_the_node(fn: Callable[[list[Update]], Weights]) -> None:
    with pytest.raises(AggregationError, match="node 'b': tensor 0 has shape \\(3,\\)"):
        fn([up("a", [1.0, 2.0]), up("b", [1.0, 2.0, 3.0])])
    with pytest.raises(AggregationError, match="node 'b' sent 2 tensors, expected 1"):
        fn([up("a", [1.0]), up("b", [1.0], [2.0])])
    with pytest.raises(AggregationError, match="node 'c': tensor 0 contains NaN"):
        fn([up("a", [1.0]), up("c", [float("nan")])])
    with pytest.raises(AggregationError, match="node 'a' sent more than one update"):
        fn([up("a", [1.0]), up("a", [2.0])])
    with pytest.raises(AggregationError, match="no updates"):
        fn([])


def test_example_counts_must_be_positive_integers() -> None:
    with pytest.raises(AggregationError, match="node 'b': num_examples must be positive"):
        fedavg([up("a", [1.0]), up("b", [1.0], n=0)])
    with pytest.raises(AggregationError, match="num_examples must be an integer"):
        fedavg([Update("a", [np.ones(1)], num_examples=True)])
