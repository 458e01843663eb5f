"""Secure aggregation, the ring encoding: floats to fixed point in Z/2^64 and back.

Masks cancel only in exact arithmetic, so each node encodes its update in fixed point
(:class:`FixedPoint`) before masking and the server decodes the unmasked sum. The model's
tensors travel as one flat vector (:func:`flatten_weights`, :func:`unflatten_weights`).
The node and the server both use these, with no protocol state: a room of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flowfed.fl.secagg_keys import SecAggError
from flowfed.fl.types import Weights

__all__ = ["FixedPoint", "flatten_weights", "unflatten_weights"]


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of floats into the ring Z/2^64 (numpy ``uint64`` arithmetic).

    A value ``x`` is stored as ``round(x · 2^frac_bits)`` in two's complement, so sums
    modulo 2^64 are exact and negative numbers need no special case.

    Precision: each encoded value is off by at most ``2^-(frac_bits+1)`` (≈ 3e-8 for the
    default 24 bits), so a sum of ``n`` updates is exact to ``n · 2^-(frac_bits+1)``
    (also bounded by float64's own relative precision for very large values).

    Overflow: a decoded sum is correct while ``|Σ x| < 2^(63-frac_bits)`` (≈ 5.5e11).
    :meth:`limit` guarantees it: with ``n`` participants each value must satisfy
    ``|x| ≤ 2^(62-frac_bits) / n``, which the client checks before masking.

    >>> fp = FixedPoint(frac_bits=24)
    >>> fp.decode(fp.encode(np.array([-1.5, 0.25])) * np.uint64(2))
    array([-3. ,  0.5])
    """

    frac_bits: int = 24

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 52:
            raise SecAggError(f"frac_bits must be in [0, 52], got {self.frac_bits}")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def limit(self, participants: int) -> float:
        """The largest ``|x|`` a client may encode so that a sum of ``participants``
        values cannot overflow (one bit of head room below the sign bit)."""
        return 2.0 ** (62 - self.frac_bits) / max(participants, 1)

    def encode(self, values: np.ndarray) -> np.ndarray:
        scaled = np.rint(np.asarray(values, dtype=np.float64) * self.scale)
        # int64 -> uint64 reinterprets two's complement: -1 becomes 2^64 - 1, as the ring wants.
        return scaled.astype(np.int64).view(np.uint64)

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        return np.asarray(encoded, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale


def flatten_weights(weights: Weights) -> np.ndarray:
    """All tensors of ``weights`` as one flat float64 vector (empty weights: an empty vector).

    >>> flatten_weights([np.ones((2, 2)), np.zeros(1)])
    array([1., 1., 1., 1., 0.])
    """
    if not weights:
        return np.zeros(0)
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten_weights(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> Weights:
    """Cut a flat vector back into tensors of ``shapes`` (the inverse of :func:`flatten_weights`).

    >>> unflatten_weights(np.arange(3.0), [(1,), (2,)])
    [array([0.]), array([1., 2.])]
    """
    out: Weights = []
    offset = 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out
