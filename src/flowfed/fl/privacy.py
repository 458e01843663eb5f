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

import contextlib
import logging
import math
import secrets
from collections.abc import Iterator, Sequence
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
    "secure_rng",
]


def secure_rng() -> np.random.Generator:
    """A generator seeded with 128 bits from the OS's CSPRNG (``secrets``), fresh per call.

    Privacy noise must come from here, never from a flow's ``seed``: anyone holding the
    flow file could regenerate a seeded stream and subtract it, and the reported ε would
    protect nothing. Each call draws a new seed, so no two rounds or runs share a stream.

    >>> a, b = secure_rng().normal(size=3), secure_rng().normal(size=3)
    >>> bool((a != b).all())
    True
    """
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


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
    sum: Weights,
    noise_multiplier: float,
    max_norm: float,
    rng: np.random.Generator | None = None,
) -> Weights:
    """Add ``N(0, (noise_multiplier · max_norm)²)`` to every coordinate of a clipped sum.

    Without ``rng`` the noise comes from :func:`secure_rng` (the OS's CSPRNG): what the
    engine always uses. Pass a seeded ``rng`` only in tests. numpy's sampler is not a
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
    rng = rng if rng is not None else secure_rng()
    return [np.asarray(s, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(s)) for s in sum]


def private_mean_update(
    global_weights: Weights,
    updates: Sequence[Update],
    max_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> Weights:
    """One DP-FedAvg server step: ``w + (Σ clip(w_k - w) + noise) / n``.

    The noise comes from the OS's CSPRNG unless a (test) ``rng`` is given.

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

    Each :meth:`step` composes one round: a Gaussian mechanism whose noise has standard
    deviation ``noise_multiplier · C`` on the sum of changes clipped to ``C``, under the
    way the round's participants were chosen (``sampling``):

    * ``"poisson"`` — each node takes part independently with probability
      ``sample_rate`` (1.0: every node, every round). Neighbouring runs differ by
      adding or removing one node, which moves the sum by at most ``C``: a
      ``PoissonSampledDpEvent`` of a Gaussian with multiplier ``z``.
    * ``"fixed"`` — exactly ``sample_size`` of ``population`` nodes, drawn without
      replacement (what the engine does with ``fraction_fit``). The bound known for
      this sampling (Wang, Balle, Kasiviswanathan 2019) is for neighbours that differ by
      *replacing* one node, which moves the sum by up to ``2C``: a
      ``SampledWithoutReplacementDpEvent`` of a Gaussian with multiplier ``z / 2``.

    ``method`` picks the library's Rényi-DP accountant (``"rdp"``, fast, slightly loose)
    or its privacy-loss-distribution accountant (``"pld"``, tighter, slower; Poisson
    sampling only).

    >>> acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=0.01, delta=1e-5)
    >>> acc.step(100) < 1.0
    True
    >>> acc.rounds
    100
    >>> fixed = PrivacyAccountant(1.0, sampling="fixed", population=10, sample_size=3)
    >>> fixed.describe()
    'RDP, 3 of 10 nodes sampled without replacement per round (replace-one, sensitivity 2C)'
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float = 1.0,
        delta: float = 1e-5,
        method: Literal["rdp", "pld"] = "rdp",
        *,
        sampling: Literal["poisson", "fixed"] = "poisson",
        population: int | None = None,
        sample_size: int | None = None,
    ) -> None:
        if not noise_multiplier > 0:
            # z = 0 means no noise: ε is infinite, which the caller should choose knowingly.
            raise AggregationError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
        if not 0.0 < delta < 1.0:
            raise AggregationError(f"delta must be in (0, 1), got {delta!r}")
        if method not in ("rdp", "pld"):
            raise AggregationError(f"method must be 'rdp' or 'pld', got {method!r}")
        if sampling == "fixed":
            if population is None or sample_size is None or not 1 <= sample_size <= population:
                raise AggregationError(
                    "fixed-size sampling needs 1 <= sample_size <= population, got "
                    f"sample_size={sample_size!r}, population={population!r}"
                )
            if method != "rdp":
                raise AggregationError("fixed-size sampling is accounted with method 'rdp' only")
            sample_rate = sample_size / population
        elif sampling != "poisson":
            raise AggregationError(f"sampling must be 'poisson' or 'fixed', got {sampling!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise AggregationError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self.method = method
        self.sampling = sampling
        self.population = population
        self.sample_size = sample_size
        self.rounds = 0
        # Imported here: dp-accounting pulls in SciPy (over a second), which a flow
        # without differential privacy should not pay for at start-up.
        import dp_accounting
        from dp_accounting import pld, rdp

        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if sampling == "fixed":
            assert population is not None and sample_size is not None
            self._accountant: dp_accounting.PrivacyAccountant = rdp.RdpAccountant(
                neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
            )
            # Replacing one node's clipped change moves the sum by up to 2C, so the noise
            # is z·C / 2C = z/2 times the sensitivity.
            half = dp_accounting.GaussianDpEvent(self.noise_multiplier / 2.0)
            self._event: dp_accounting.DpEvent = dp_accounting.SampledWithoutReplacementDpEvent(
                population, sample_size, half
            )
        else:
            self._accountant = rdp.RdpAccountant() if method == "rdp" else pld.PLDAccountant()
            self._event = (
                gaussian
                if self.sample_rate == 1.0
                else dp_accounting.PoissonSampledDpEvent(self.sample_rate, gaussian)
            )

    def describe(self) -> str:
        """The accountant and sampling scheme, in words (for model cards and summaries)."""
        how = "RDP" if self.method == "rdp" else "PLD"
        if self.sampling == "fixed":
            return (
                f"{how}, {self.sample_size} of {self.population} nodes sampled without "
                "replacement per round (replace-one, sensitivity 2C)"
            )
        if self.sample_rate == 1.0:
            return f"{how}, every node every round (add/remove-one, sensitivity C)"
        return (
            f"{how}, Poisson sampling at rate {self.sample_rate:g} (add/remove-one, sensitivity C)"
        )

    def step(self, rounds: int = 1) -> float:
        """Record ``rounds`` more DP rounds; return the ε spent so far."""
        if rounds < 1:
            raise AggregationError(f"rounds must be >= 1, got {rounds!r}")
        with _quiet_absl():
            self._accountant.compose(self._event, rounds)
        self.rounds += rounds
        return self.spent()[0]

    def spent(self) -> tuple[float, float]:
        """``(ε, δ)`` spent over all rounds so far; ``(0.0, δ)`` before the first."""
        if self.rounds == 0:
            return 0.0, self.delta
        with _quiet_absl():
            return float(self._accountant.get_epsilon(self.delta)), self.delta


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Some RDP orders do not converge for small noise; dp-accounting logs each order it
    leaves out (a warning per order, per call) and still returns a valid bound."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)
