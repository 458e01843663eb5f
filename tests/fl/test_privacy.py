"""Client-level DP: clipping, noise scale, and (epsilon, delta) accounting."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from flowfed.fl import (
    AggregationError,
    PrivacyAccountant,
    Update,
    add_gaussian_noise,
    clip_update,
    global_norm,
    private_mean_update,
)


def test_clip_scales_the_whole_model_to_max_norm() -> None:
    # ||([3], [[4]])|| = 5 -> scaled by 1/5 to norm 1.
    out = clip_update([np.array([3.0]), np.array([[4.0]])], max_norm=1.0)
    np.testing.assert_allclose(out[0], [0.6])
    np.testing.assert_allclose(out[1], [[0.8]])
    # Already inside the ball: untouched (clipping never scales up).
    small = clip_update([np.array([0.3, 0.4])], max_norm=1.0)
    np.testing.assert_allclose(small[0], [0.3, 0.4])


def test_clip_bounds_the_norm_of_any_update() -> None:
    rng = np.random.default_rng(0)
    for scale in [1e-3, 1.0, 1e3, 1e8]:
        delta = [rng.normal(size=(10, 10)) * scale, rng.normal(size=7) * scale]
        clipped = clip_update(delta, max_norm=2.5)
        assert global_norm(clipped) <= 2.5 * (1 + 1e-12)
        # Direction is kept: clipped is a non-negative multiple of delta.
        ratio = clipped[0] / delta[0]
        np.testing.assert_allclose(ratio, ratio.flat[0])
    with pytest.raises(AggregationError, match="max_norm"):
        clip_update([np.ones(2)], max_norm=0.0)


def test_noise_has_the_right_scale() -> None:
    rng = np.random.default_rng(42)
    # std = noise_multiplier * max_norm = 1.5 * 2 = 3 on every coordinate.
    noisy = add_gaussian_noise([np.zeros((400, 500)), np.full(1000, 7.0)], 1.5, 2.0, rng)
    assert abs(noisy[0].std() - 3.0) < 0.03
    assert abs(noisy[0].mean()) < 0.03
    assert abs(noisy[1].mean() - 7.0) < 0.3
    assert noisy[0].shape == (400, 500)
    # Seeded: the same generator state gives the same noise.
    a = add_gaussian_noise([np.zeros(5)], 1.0, 1.0, np.random.default_rng(7))
    b = add_gaussian_noise([np.zeros(5)], 1.0, 1.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_private_mean_update_by_hand_and_sensitivity() -> None:
    g = [np.array([1.0, 1.0])]
    ups = [Update("a", [np.array([4.0, 5.0])]), Update("b", [np.array([1.0, 1.5])])]
    # deltas (3, 4) -> clipped (0.6, 0.8); (0, 0.5) stays; mean (0.3, 0.65); plus g.
    out = private_mean_update(
        g, ups, max_norm=1.0, noise_multiplier=0.0, rng=np.random.default_rng()
    )
    np.testing.assert_allclose(out[0], [1.3, 1.65])
    # However wild one node's update, the noiseless result moves by at most C / n.
    evil = [ups[0], Update("b", [np.array([1e9, -1e9])])]
    moved = private_mean_update(g, evil, 1.0, 0.0, np.random.default_rng())
    assert np.linalg.norm(moved[0] - out[0]) <= 2 * 1.0 / 2 + 1e-12


def test_epsilon_grows_with_rounds() -> None:
    acc = PrivacyAccountant(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5)
    assert acc.spent() == (0.0, 1e-5)
    eps = [acc.step() for _ in range(6)]
    assert all(b > a for a, b in itertools.pairwise(eps))
    assert acc.rounds == 6
    assert acc.spent() == (eps[-1], 1e-5)


def test_epsilon_shrinks_with_more_noise_and_less_sampling() -> None:
    by_noise = [PrivacyAccountant(z, 0.1, 1e-5).step(20) for z in (0.8, 1.0, 2.0, 5.0)]
    assert all(b < a for a, b in itertools.pairwise(by_noise))
    by_rate = [PrivacyAccountant(1.0, q, 1e-5).step(20) for q in (1.0, 0.5, 0.1, 0.01)]
    assert all(b < a for a, b in itertools.pairwise(by_rate))
    by_delta = [PrivacyAccountant(1.0, 0.1, d).step(20) for d in (1e-3, 1e-5, 1e-7)]
    assert all(b > a for a, b in itertools.pairwise(by_delta))


def test_values_match_the_library_for_known_configurations() -> None:
    # One full-participation Gaussian round, z = 1, delta = 1e-5 (dp-accounting 0.6 RDP).
    one = PrivacyAccountant(noise_multiplier=1.0, sample_rate=1.0, delta=1e-5).step()
    assert one == pytest.approx(4.728507, abs=1e-5)
    # The classic RDP conversion eps <= min_a a/(2 z^2) + ln(1/delta)/(a - 1) gives 5.30
    # (at a = 1 + sqrt(2 ln 1e5)); the library's conversion is tighter, never looser.
    a = 1 + math.sqrt(2 * math.log(1e5))
    classic = a / 2 + math.log(1e5) / (a - 1)
    assert classic == pytest.approx(5.298, abs=1e-3)
    assert 4.0 < one < classic
    # Abadi et al.-style DP-SGD setting: q = 0.01, z = 1.1, 100 steps.
    acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=0.01, delta=1e-5)
    assert acc.step(100) == pytest.approx(0.956091, abs=1e-5)
    # ... and the same through the library directly.
    direct = rdp.RdpAccountant()
    direct.compose(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 100
    )
    assert acc.spent()[0] == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)


def test_pld_accounting_is_tighter_than_rdp() -> None:
    rdp_eps = PrivacyAccountant(1.1, 0.01, 1e-5, method="rdp").step(100)
    pld_eps = PrivacyAccountant(1.1, 0.01, 1e-5, method="pld").step(100)
    assert 0.3 < pld_eps < rdp_eps


def test_accountant_rejects_bad_settings() -> None:
    with pytest.raises(AggregationError, match="noise_multiplier"):
        PrivacyAccountant(0.0)
    with pytest.raises(AggregationError, match="sample_rate"):
        PrivacyAccountant(1.0, sample_rate=0.0)
    with pytest.raises(AggregationError, match="delta"):
        PrivacyAccountant(1.0, delta=1.0)
    with pytest.raises(AggregationError, match="method"):
        PrivacyAccountant(1.0, method="moments")  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="rounds"):
        PrivacyAccountant(1.0).step(0)
