"""Secure aggregation by pairwise additive masking (Bonawitz et al., CCS 2017).

The server learns the *sum* of the nodes' updates and nothing about any single one.

Protocol, per round (every node makes a fresh :class:`SecAggClient`):

1. Each node generates an X25519 key pair and sends its public key to the server, which
   forwards the roster ``{node: public_key}`` to every participant.
2. Each pair ``(i, j)`` agrees on a shared secret by X25519; HKDF-SHA256 turns it (with
   the round and both node ids as context) into a 32-byte seed ``s_ij``, and ChaCha20
   stretches the seed into a mask vector ``m_ij`` as long as the model.
3. Node ``i`` encodes its update in fixed point in the ring of integers modulo 2^64 and
   sends ``y_i = x_i + Σ_{j>i} m_ij - Σ_{j<i} m_ij (mod 2^64)``. Every ``y_i`` is
   uniformly random to anyone without the seeds, i.e. to the server.
4. The server adds the ``y_i``: each ``m_ij`` is added once (by the smaller id) and
   subtracted once (by the larger), so the masks cancel and ``Σ y_i = Σ x_i``.
5. If node ``d`` dropped out after the roster was fixed, its masks no longer cancel.
   Each survivor ``i`` then reveals ``s_id`` and the server removes ``±m_id`` from the sum.

Simplification (documented in docs/federated.md): in the paper a dropped node's
pairwise seeds are recovered from Shamir shares of its key held by the survivors, and
every node also adds a *self-mask* so that a server which wrongly declares a live node
dropped (and then receives its late ``y_d``) still learns nothing. Here survivors reveal
``s_id`` directly and there is no self-mask: correct and private against an honest-but-
curious server that reports dropouts truthfully, not against one that lies about them.
Public keys are taken as given; a real deployment authenticates them (e.g. by the
node's signed WebSocket session) so the server cannot substitute its own.

>>> import numpy as np
>>> a, b, c = (SecAggClient(n, round=1) for n in "abc")
>>> roster = {cl.node_id: cl.public_key() for cl in (a, b, c)}
>>> masked = {cl.node_id: cl.mask([np.array([float(i)])], roster)
...           for i, cl in enumerate((a, b, c))}
>>> SecAggServer().aggregate(masked)
[array([3.])]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flowfed.fl.types import AggregationError, Update, Weights, check_weights, shapes_of

__all__ = [
    "FixedPoint",
    "MaskedUpdate",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "derive_pair_seed",
    "mask_vector",
]

_HKDF_LABEL = "flowfed-secagg-v1"
_SEED_BYTES = 32


class SecAggError(AggregationError):
    """A secure-aggregation protocol violation: inconsistent rounds, missing seeds, ..."""


# --------------------------------------------------------------------------- fixed point


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


# --------------------------------------------------------------------------- key agreement, PRG


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
    return HKDF(algorithm=hashes.SHA256(), length=_SEED_BYTES, salt=None, info=info).derive(shared)


def mask_vector(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random ``uint64`` values from ``seed`` (ChaCha20 keystream).

    A cryptographic PRG, not numpy's PCG64: the masks must be unpredictable to the
    server, and PCG64's state can be recovered from its output.

    >>> v = mask_vector(bytes(32), 3)
    >>> v.dtype, len(v), bool((v == mask_vector(bytes(32), 3)).all())
    (dtype('uint64'), 3, True)
    """
    if len(seed) != _SEED_BYTES:
        raise SecAggError(f"a pair seed is {_SEED_BYTES} bytes, got {len(seed)}")
    # Each seed is used for exactly one mask, so a fixed all-zero nonce is safe here.
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class MaskedUpdate:
    """What a node sends the server: its masked, fixed-point-encoded vector and metadata.

    ``data`` is one flat ``uint64`` vector (all tensors, then the example count when
    ``weighted``), indistinguishable from random without the pair seeds.
    """

    node: str
    round: int
    participants: frozenset[str]
    shapes: tuple[tuple[int, ...], ...]
    weighted: bool
    frac_bits: int
    data: np.ndarray


def _flatten(weights: Weights) -> np.ndarray:
    if not weights:
        return np.zeros(0)
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def _unflatten(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> Weights:
    out: Weights = []
    offset = 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


# --------------------------------------------------------------------------- client


class SecAggClient:
    """One node's side of one round. Make a new client every round: keys are per round.

    >>> c = SecAggClient("hospital-a", round=3)
    >>> len(c.public_key())
    32
    """

    def __init__(self, node_id: str, round: int, fixed_point: FixedPoint | None = None) -> None:
        self.node_id = node_id
        self.round = int(round)
        self.fixed_point = fixed_point or FixedPoint()
        self._private_key = X25519PrivateKey.generate()
        self._seeds: dict[str, bytes] | None = None

    def public_key(self) -> bytes:
        """This round's X25519 public key (32 raw bytes), to publish through the server."""
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def mask(self, weights: Weights, peers: Mapping[str, bytes]) -> MaskedUpdate:
        """Mask ``weights`` for a plain secure sum over this node and ``peers``.

        ``peers`` is the round's roster ``{node: public_key}``; it may include this node
        itself (with its own key), so the server can send everyone the same roster.
        """
        return self._mask(_flatten(weights), shapes_of(weights), peers, weighted=False)

    def mask_update(self, update: Update, peers: Mapping[str, bytes]) -> MaskedUpdate:
        """Mask ``num_examples · weights`` and ``num_examples`` for a secure FedAvg.

        The server then learns only ``Σ n_k w_k`` and ``Σ n_k``, whose ratio is FedAvg.
        """
        if update.node != self.node_id:
            raise SecAggError(f"client {self.node_id!r} cannot mask the update of {update.node!r}")
        if update.num_examples <= 0:
            raise SecAggError(f"node {self.node_id!r}: num_examples must be positive")
        n = float(update.num_examples)
        flat = np.concatenate([_flatten(update.weights) * n, [n]])
        return self._mask(flat, shapes_of(update.weights), peers, weighted=True)

    def reveal_pair_seed(self, dropped_node: str) -> bytes:
        """The seed this node shares with ``dropped_node``, so the server can unmask the sum.

        Only for a node that dropped out: revealing the seed of a node whose masked
        input the server holds would let it remove one of that node's masks.
        """
        if self._seeds is None:
            raise SecAggError(f"node {self.node_id!r} has not masked anything this round")
        if dropped_node == self.node_id:
            raise SecAggError(f"node {self.node_id!r} will not reveal a seed with itself")
        if dropped_node not in self._seeds:
            raise SecAggError(
                f"node {dropped_node!r} was not a peer of {self.node_id!r} in round {self.round}"
            )
        return self._seeds[dropped_node]

    def _mask(
        self,
        flat: np.ndarray,
        shapes: list[tuple[int, ...]],
        peers: Mapping[str, bytes],
        *,
        weighted: bool,
    ) -> MaskedUpdate:
        # Masking two inputs with the same pair masks would hand the server their
        # difference, so a client masks exactly once.
        if self._seeds is not None:
            raise SecAggError(
                f"node {self.node_id!r} already masked an update in round {self.round}; "
                "use a new SecAggClient (fresh keys) for every round"
            )
        own = self.public_key()
        others = {n: k for n, k in peers.items() if n != self.node_id}
        if self.node_id in peers and peers[self.node_id] != own:
            raise SecAggError(f"the roster holds a different public key for {self.node_id!r}")
        if not others:
            raise SecAggError("secure aggregation needs at least two participants")
        if len(set(others.values()) | {own}) != len(others) + 1:
            raise SecAggError("two participants in the roster share a public key")
        check_weights([flat], [flat.shape], f"node {self.node_id!r}")
        participants = frozenset(others) | {self.node_id}
        bound = self.fixed_point.limit(len(participants))
        if flat.size and float(np.max(np.abs(flat))) > bound:
            raise SecAggError(
                f"node {self.node_id!r}: a value exceeds {bound:.3g}, the fixed-point limit "
                f"for {len(participants)} participants with {self.fixed_point.frac_bits} "
                "fractional bits; scale the update or lower frac_bits"
            )
        seeds = {
            peer: derive_pair_seed(self._private_key, key, self.round, self.node_id, peer)
            for peer, key in others.items()
        }
        data = self.fixed_point.encode(flat)
        # uint64 arithmetic wraps modulo 2^64, exactly the ring the masks live in.
        for peer, seed in seeds.items():
            m = mask_vector(seed, data.size)
            data = data + m if self.node_id < peer else data - m
        self._seeds = seeds
        return MaskedUpdate(
            node=self.node_id,
            round=self.round,
            participants=participants,
            shapes=tuple(shapes),
            weighted=weighted,
            frac_bits=self.fixed_point.frac_bits,
            data=data,
        )


# --------------------------------------------------------------------------- server


class SecAggServer:
    """Sums masked updates; sees only uniformly random vectors and their total.

    ``min_survivors`` (default 2) refuses to unmask a "sum" of a single node's update,
    which would be that update in the clear.
    """

    def __init__(self, min_survivors: int = 2) -> None:
        if min_survivors < 1:
            raise SecAggError("min_survivors must be at least 1")
        self.min_survivors = min_survivors

    def aggregate(
        self,
        masked: Mapping[str, MaskedUpdate],
        dropped: set[str] | frozenset[str] = frozenset(),
        revealed: Mapping[tuple[str, str], bytes] | None = None,
    ) -> Weights:
        """The plain sum ``Σ x_i`` over the surviving nodes.

        ``dropped`` names participants whose masked input never arrived; ``revealed``
        maps ``(survivor, dropped)`` to the pair seed the survivor revealed.
        """
        first, total = self._unmasked_sum(masked, dropped, revealed or {})
        if first.weighted:
            raise SecAggError("these updates were masked with mask_update; use fedavg()")
        fp = FixedPoint(first.frac_bits)
        return _unflatten(fp.decode(total), first.shapes)

    def fedavg(
        self,
        masked: Mapping[str, MaskedUpdate],
        dropped: set[str] | frozenset[str] = frozenset(),
        revealed: Mapping[tuple[str, str], bytes] | None = None,
    ) -> tuple[Weights, int]:
        """FedAvg of the survivors through the secure sum, and their total example count."""
        first, total = self._unmasked_sum(masked, dropped, revealed or {})
        if not first.weighted:
            raise SecAggError("these updates were masked with mask(); use aggregate()")
        decoded = FixedPoint(first.frac_bits).decode(total)
        examples = float(decoded[-1])
        if examples <= 0:
            raise SecAggError(f"the summed example count is {examples}; cannot average")
        return _unflatten(decoded[:-1] / examples, first.shapes), round(examples)

    def _unmasked_sum(
        self,
        masked: Mapping[str, MaskedUpdate],
        dropped: set[str] | frozenset[str],
        revealed: Mapping[tuple[str, str], bytes],
    ) -> tuple[MaskedUpdate, np.ndarray]:
        if not masked:
            raise SecAggError("no masked updates to aggregate")
        first = next(iter(masked.values()))
        for key, mu in masked.items():
            if key != mu.node:
                raise SecAggError(f"masked update filed under {key!r} comes from {mu.node!r}")
            for attr in ("round", "participants", "shapes", "weighted", "frac_bits"):
                if getattr(mu, attr) != getattr(first, attr):
                    raise SecAggError(
                        f"node {mu.node!r} disagrees with node {first.node!r} on {attr}"
                    )
            if mu.data.dtype != np.uint64 or mu.data.shape != first.data.shape:
                raise SecAggError(f"node {mu.node!r} sent a malformed masked vector")
        survivors = set(masked)
        dropped = set(dropped)
        if survivors & dropped:
            raise SecAggError(f"nodes both sent and dropped: {sorted(survivors & dropped)}")
        if survivors | dropped != set(first.participants):
            missing = sorted(set(first.participants) - survivors - dropped)
            extra = sorted((survivors | dropped) - set(first.participants))
            raise SecAggError(
                f"round {first.round}: every participant must have sent or dropped; "
                f"unaccounted: {missing}, not participants: {extra}"
            )
        if len(survivors) < self.min_survivors:
            raise SecAggError(
                f"only {len(survivors)} survivor(s), fewer than min_survivors="
                f"{self.min_survivors}: the sum would expose individual updates"
            )
        wanted = {(s, d) for s in survivors for d in dropped}
        missing_seeds = sorted(wanted - set(revealed))
        if missing_seeds:
            raise SecAggError(f"pair seeds not revealed for (survivor, dropped): {missing_seeds}")
        unexpected = sorted(set(revealed) - wanted)
        if unexpected:
            raise SecAggError(
                f"revealed seeds for pairs that are not (survivor, dropped): {unexpected}"
            )

        total = np.zeros(first.data.shape, dtype=np.uint64)
        for mu in masked.values():
            total += mu.data  # wraps modulo 2^64
        # Survivor s added m_sd if s < d and subtracted it otherwise; undo exactly that.
        for (s, d), seed in revealed.items():
            m = mask_vector(seed, total.size)
            total = total - m if s < d else total + m
        return first, total
