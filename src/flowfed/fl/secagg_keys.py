"""Secure aggregation, phase 1-2: pairwise key agreement and the masks it seeds.

Each pair of nodes agrees on a 32-byte seed by X25519 + HKDF-SHA256
(:func:`derive_pair_seed`), and ChaCha20 stretches a seed into a mask vector as long as
the model (:func:`mask_vector`). Both the node (to mask) and the server (to remove a
dropped node's masks from revealed seeds) need exactly these two functions, so they are a
room of their own, below the client and the server. :class:`SecAggError`, the protocol's
one exception, lives here too, at the bottom of :mod:`flowfed.fl.secagg`'s modules.

The protocol as a whole is described in :mod:`flowfed.fl.secagg`.
"""

from __future__ import annotations

import json

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flowfed.fl.types import AggregationError

__all__ = ["KEY_BYTES", "SEED_BYTES", "SecAggError", "derive_pair_seed", "mask_vector"]

_HKDF_LABEL = "flowfed-secagg-v1"
#: Bytes of a pair seed (the ChaCha20 key) and of a raw X25519 key.
SEED_BYTES = 32
KEY_BYTES = 32


class SecAggError(AggregationError):
    """A secure-aggregation protocol violation: inconsistent rounds, missing seeds, ..."""


def derive_pair_seed(
    private_key: X25519PrivateKey, peer_public: bytes, round: int, a: str, b: str
) -> bytes:
    """The 32-byte seed nodes ``a`` and ``b`` share for ``round``.

    X25519 gives both ends the same secret; HKDF binds it to the round and the (sorted)
    pair so that a seed can never be replayed in another round or for another pair.
    """
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length, or a low-order point giving an all-zero secret
        raise SecAggError(f"bad public key for the pair ({a!r}, {b!r}): {exc}") from exc
    lo, hi = sorted((a, b))
    info = json.dumps([_HKDF_LABEL, int(round), lo, hi]).encode()
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def mask_vector(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random ``uint64`` values from ``seed`` (ChaCha20 keystream).

    A cryptographic PRG, not numpy's PCG64: the masks must be unpredictable to the
    server, and PCG64's state can be recovered from its output.

    >>> v = mask_vector(bytes(32), 3)
    >>> v.dtype, len(v), bool((v == mask_vector(bytes(32), 3)).all())
    (dtype('uint64'), 3, True)
    """
    if len(seed) != SEED_BYTES:
        raise SecAggError(f"a pair seed is {SEED_BYTES} bytes, got {len(seed)}")
    # Each seed is used for exactly one mask, so a fixed all-zero nonce is safe here.
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)
