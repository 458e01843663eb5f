"""Client-level differential privacy: clip each node's change, add Gaussian noise, account.

This is DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models"): each node's *change* ``Δ_k = w_k - w_global`` is clipped to L2 norm at
most ``C`` (``max_norm``), the clipped changes are summed, Gaussian noise with standard
deviation ``z · C`` (``z`` the noise multiplier) is added to every coordinate of the sum,
and the result is divided by the number of nodes. One node's whole contribution moves the
sum by at most ``C``, so each round is a Gaussian mechanism with sensitivity ``C``; when the
participants of a round are a random sample (rate ``q``) of the nodes, privacy is
amplified by subsampling.

The (ε, δ) spent over the rounds is computed by Google's ``dp-accounting`` library
(Rényi-DP accounting by default, privacy-loss-distribution accounting on request), so
every run can report ε after each round.

>>> import numpy as np
>>> acc = PrivacyAccountant(noise_multiplier=1.0, sample_rate=1.0, delta=1e-5)
>>> round(acc.step(), 2)
4.73
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from flowfed.fl.types import AggregationError, Update, Weights, check_updates, shapes_of

if TYPE_CHECKING:
    import dp_accounting

__all__ = [
    "PrivacyAccountant",
    "add_gaussian_noise",
    "clip_update",
    "global_norm",
    "private_mean_update",
]


def global_norm(weights: Weights) -> float:
    """The L2 norm of a whole model, all tensors taken as one vector.

    >>> global_norm([np.array([3.0]), np.array([[4.0]])])
    5.0
    """
    return math.sqrt(
        sum(float(np.sum(np.square(np.asarray(w, dtype=np.float64)))) for w in weights)
    )


def clip_update(delta: Weights, max_norm: float) -> Weights:
    """Scale ``delta`` down (never up) so that its global L2 norm is at most ``max_norm``.

    The whole model is scaled by one factor ``min(1, C / ||Δ||)`` — per-tensor clipping
    would change the update's direction and bound the sensitivity only by ``C·√layers``.

    >>> clip_update([np.array([3.0, 4.0])], max_norm=1.0)[0].round(12).tolist()
    [0.6, 0.8]
    >>> clip_update([np.array([0.3, 0.4])], max_norm=1.0)[0].tolist()
    [0.3, 0.4]
    """
    if not max_norm > 0:
        raise AggregationError(f"max_norm must be > 0, got {max_norm!r}")
    norm = global_norm(delta)
    factor = 1.0 if norm <= max_norm else max_norm / norm
    return [np.asarray(d, dtype=np.float64) * factor for d in delta]


def add_gaussian_noise(
    sum: Weights, noise_multiplier: float, max_norm: float, rng: np.random.Generator
) -> Weights:
    """Add ``N(0, (noise_multiplier · max_norm)²)`` to every coordinate of a clipped sum.

    ``rng`` is required so runs are reproducible in tests; in production pass a generator
    seeded from the OS (``np.random.default_rng()``). numpy's sampler is not a
    cryptographically hardened one (floating-point attacks on naive Gaussian sampling,
    Mironov 2012), an accepted limitation shared by most FL frameworks.

    >>> rng = np.random.default_rng(0)
    >>> noisy = add_gaussian_noise([np.zeros(100_000)], 1.0, 2.0, rng)
    >>> round(float(noisy[0].std()), 1)
    2.0
    """
    if noise_multiplier < 0:
        raise AggregationError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    if not max_norm > 0:
        raise AggregationError(f"max_norm must be > 0, got {max_norm!r}")
    std = noise_multiplier * max_norm
    return [np.asarray(s, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(s)) for s in sum]


def private_mean_update(
    global_weights: Weights,
    updates: Sequence[Update],
    max_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> Weights:
    """One DP-FedAvg server step: ``w + (Σ clip(w_k - w) + noise) / n``.

    Every node counts equally (example counts are not used): weighting by counts would
    let one node's contribution exceed ``C`` and void the sensitivity bound.

    >>> g, rng = [np.zeros(2)], np.random.default_rng(0)
    >>> ups = [Update("a", [np.array([3.0, 4.0])]), Update("b", [np.array([0.0, 0.5])])]
    >>> new = private_mean_update(g, ups, max_norm=1.0, noise_multiplier=0.0, rng=rng)
    >>> new[0].round(12).tolist()  # ((0.6, 0.8) + (0, 0.5)) / 2, no noise
    [0.3, 0.65]
    """
    check_updates(updates, reference=shapes_of(global_weights))
    base = [np.asarray(g, dtype=np.float64) for g in global_weights]
    total = [np.zeros_like(b) for b in base]
    for update in updates:
        delta = [
            np.asarray(w, dtype=np.float64) - b for w, b in zip(update.weights, base, strict=True)
        ]
        for t, c in zip(total, clip_update(delta, max_norm), strict=True):
            t += c
    noisy = add_gaussian_noise(total, noise_multiplier, max_norm, rng)
    return [b + s / len(updates) for b, s in zip(base, noisy, strict=True)]


class PrivacyAccountant:
    """Tracks the (ε, δ) spent by repeated DP rounds, through ``dp-accounting``.

    Each :meth:`step` composes one round: a Gaussian mechanism with ``noise_multiplier``,
    Poisson-subsampled at ``sample_rate`` (the chance each node takes part in a round;
    1.0 when every node always does). ``method`` picks the library's Rényi-DP accountant
    (``"rdp"``, fast, slightly loose) or its privacy-loss-distribution accountant
    (``"pld"``, tighter, slower).

    >>> acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=0.01, delta=1e-5)
    >>> acc.step(100) < 1.0
    True
    >>> acc.rounds
    100
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float = 1.0,
        delta: float = 1e-5,
        method: Literal["rdp", "pld"] = "rdp",
    ) -> None:
        if not noise_multiplier > 0:
            # z = 0 means no noise: ε is infinite, which the caller should choose knowingly.
            raise AggregationError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise AggregationError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if not 0.0 < delta < 1.0:
            raise AggregationError(f"delta must be in (0, 1), got {delta!r}")
        if method not in ("rdp", "pld"):
            raise AggregationError(f"method must be 'rdp' or 'pld', got {method!r}")
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self.method = method
        self.rounds = 0
        # Imported here: dp-accounting pulls in SciPy (over a second), which a flow
        # without differential privacy should not pay for at start-up.
        import dp_accounting
        from dp_accounting import pld, rdp

        self._accountant: dp_accounting.PrivacyAccountant = (
            rdp.RdpAccountant() if method == "rdp" else pld.PLDAccountant()
        )
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        self._event: dp_accounting.DpEvent = (
            gaussian
            if self.sample_rate == 1.0
            else dp_accounting.PoissonSampledDpEvent(self.sample_rate, gaussian)
        )

    def step(self, rounds: int = 1) -> float:
        """Record ``rounds`` more DP rounds; return the ε spent so far."""
        if rounds < 1:
            raise AggregationError(f"rounds must be >= 1, got {rounds!r}")
        self._accountant.compose(self._event, rounds)
        self.rounds += rounds
        return self.spent()[0]

    def spent(self) -> tuple[float, float]:
        """``(ε, δ)`` spent over all rounds so far; ``(0.0, δ)`` before the first."""
        if self.rounds == 0:
            return 0.0, self.delta
        return float(self._accountant.get_epsilon(self.delta)), self.delta
