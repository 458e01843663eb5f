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

Every message has a JSON form (:meth:`MaskedUpdate.to_json`, :class:`RevealedSeeds`,
:meth:`SecAggClient.secret`, :func:`encode_roster`), so the protocol can run as separate
tasks: the tools ``flowfed.secagg_keys`` / ``secagg_mask`` / ``secagg_reveal`` on the nodes
(``flowfed.tools.library.federated``) and :func:`secure_fedavg` / :func:`secure_sum` on
the server.

>>> import numpy as np
>>> a, b, c = (SecAggClient(n, round=1) for n in "abc")
>>> roster = {cl.node_id: cl.public_key() for cl in (a, b, c)}
>>> masked = {cl.node_id: cl.mask([np.array([float(i)])], roster)
...           for i, cl in enumerate((a, b, c))}
>>> SecAggServer().aggregate(masked)
[array([3.])]
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flowfed.fl.types import AggregationError, Update, Weights, check_weights, shapes_of

__all__ = [
    "FixedPoint",
    "MaskedUpdate",
    "RevealedSeeds",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "decode_roster",
    "derive_pair_seed",
    "encode_roster",
    "mask_vector",
    "secure_fedavg",
    "secure_sum",
]

_HKDF_LABEL = "flowfed-secagg-v1"
_SEED_BYTES = 32
_KEY_BYTES = 32

# The "format" tag of each JSON payload: a reader refuses any other, so a payload of a
# future, incompatible layout fails loudly instead of decoding into a wrong sum.
MASKED_FORMAT = "flowfed.secagg.masked/1"
SECRET_FORMAT = "flowfed.secagg.secret/1"
SEEDS_FORMAT = "flowfed.secagg.seeds/1"


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

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: the metadata as plain values, ``data`` as base64 text of the
        vector's little-endian ``uint64`` bytes (the format is in docs/federated.md).

        >>> a, b = SecAggClient("a", round=1), SecAggClient("b", round=1)
        >>> roster = {"a": a.public_key(), "b": b.public_key()}
        >>> payload = a.mask([np.zeros(2)], roster).to_json()
        >>> sorted(payload)
        ['data', 'format', 'frac_bits', 'node', 'participants', 'round', 'shapes', 'weighted']
        >>> MaskedUpdate.from_json(payload).shapes
        ((2,),)
        """
        return {
            "format": MASKED_FORMAT,
            "node": self.node,
            "round": self.round,
            "participants": sorted(self.participants),
            "shapes": [list(shape) for shape in self.shapes],
            "weighted": self.weighted,
            "frac_bits": self.frac_bits,
            "data": _b64(np.asarray(self.data, dtype="<u8").tobytes()),
        }

    @classmethod
    def from_json(cls, payload: Any, *, sender: str | None = None) -> MaskedUpdate:
        """Read a payload written by :meth:`to_json`, checking every field.

        ``sender`` is the node the payload is filed under (it names the culprit when the
        payload is too broken to say who wrote it). The vector's length must match the
        shapes: a truncated or padded vector is refused here, not summed into garbage.
        """
        who = _who(payload, sender)
        d = _payload(payload, MASKED_FORMAT, who)
        node = _get(d, "node", str, who)
        rnd = _get(d, "round", int, who)
        participants = _get(d, "participants", list, who)
        if not all(isinstance(p, str) for p in participants):
            raise SecAggError(f"{who}: 'participants' must be a list of node names")
        raw_shapes = _get(d, "shapes", list, who)
        try:
            shapes = tuple(tuple(int(n) for n in shape) for shape in raw_shapes)
        except (TypeError, ValueError):
            raise SecAggError(f"{who}: 'shapes' must be a list of lists of integers") from None
        if any(n < 0 for shape in shapes for n in shape):
            raise SecAggError(f"{who}: 'shapes' holds a negative dimension")
        weighted = _get(d, "weighted", bool, who)
        frac_bits = _get(d, "frac_bits", int, who)
        raw = _unb64(_get(d, "data", str, who), f"{who}: 'data'")
        if len(raw) % 8:
            raise SecAggError(f"{who}: 'data' is {len(raw)} bytes, not a whole number of uint64")
        data = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        expected = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes) + int(weighted)
        if data.size != expected:
            raise SecAggError(
                f"{who}: 'data' holds {data.size} values but the shapes {list(shapes)} "
                f"{'plus the example count ' if weighted else ''}need {expected}"
            )
        return cls(
            node=node,
            round=rnd,
            participants=frozenset(participants),
            shapes=shapes,
            weighted=weighted,
            frac_bits=frac_bits,
            data=data,
        )


@dataclass(frozen=True)
class RevealedSeeds:
    """What a surviving node sends after a dropout: its pair seed with each dropped node.

    >>> r = RevealedSeeds("a", 2, {"c": bytes(32)})
    >>> RevealedSeeds.from_json(r.to_json()) == r
    True
    """

    node: str
    round: int
    seeds: dict[str, bytes]

    def to_json(self) -> dict[str, Any]:
        """``{"format", "node", "round", "seeds": {dropped_node: base64 seed}}``."""
        return {
            "format": SEEDS_FORMAT,
            "node": self.node,
            "round": self.round,
            "seeds": {d: _b64(seed) for d, seed in sorted(self.seeds.items())},
        }

    @classmethod
    def from_json(cls, payload: Any, *, sender: str | None = None) -> RevealedSeeds:
        """Read a payload written by :meth:`to_json`; every seed must be 32 bytes."""
        who = _who(payload, sender)
        d = _payload(payload, SEEDS_FORMAT, who)
        seeds = _get(d, "seeds", dict, who)
        decoded = {
            str(dropped): _unb64(text, f"{who}: the seed for {dropped!r}", _SEED_BYTES)
            for dropped, text in seeds.items()
        }
        return cls(_get(d, "node", str, who), _get(d, "round", int, who), decoded)


def encode_roster(roster: Mapping[str, bytes]) -> dict[str, str]:
    """``{node: raw public key}`` as JSON-able ``{node: base64}`` (what the tools exchange)."""
    return {node: _b64(key) for node, key in sorted(roster.items())}


def decode_roster(roster: Mapping[str, Any]) -> dict[str, bytes]:
    """``{node: base64 public key}`` back to raw 32-byte keys (what :meth:`SecAggClient.mask`
    takes as ``peers``).

    >>> c = SecAggClient("a", round=1)
    >>> decode_roster(encode_roster({"a": c.public_key()}))["a"] == c.public_key()
    True
    """
    if not isinstance(roster, Mapping):
        raise SecAggError(f"the roster must map node names to public keys, got {type(roster)}")
    return {
        str(node): _unb64(key, f"roster entry {node!r}", _KEY_BYTES) for node, key in roster.items()
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str, length: int | None = None) -> bytes:
    """Decode base64 ``text``; ``length``, when given, is the exact byte count required."""
    if not isinstance(text, str):
        raise SecAggError(f"{what} must be base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SecAggError(f"{what} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise SecAggError(f"{what} is {len(raw)} bytes, not {length}")
    return raw


def _who(payload: Any, sender: str | None) -> str:
    if sender is not None:
        return f"node {sender!r}"
    node = payload.get("node") if isinstance(payload, Mapping) else None
    return f"node {node!r}" if isinstance(node, str) else "a secure-aggregation payload"


def _payload(payload: Any, fmt: str, who: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise SecAggError(f"{who}: expected a JSON object, got {type(payload).__name__}")
    found = payload.get("format")
    if found != fmt:
        raise SecAggError(f"{who}: expected a {fmt!r} payload, found format {found!r}")
    return payload


def _get(d: Mapping[str, Any], key: str, kind: type, who: str) -> Any:
    if key not in d:
        raise SecAggError(f"{who}: the payload has no {key!r}")
    value = d[key]
    # bool is an int subclass: a round of True is a bug, not round 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SecAggError(
            f"{who}: {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r:.40}"
        )
    return value


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

    def __init__(
        self,
        node_id: str,
        round: int,
        fixed_point: FixedPoint | None = None,
        *,
        private_key: X25519PrivateKey | None = None,
    ) -> None:
        self.node_id = node_id
        self.round = int(round)
        self.fixed_point = fixed_point or FixedPoint()
        self._private_key = private_key or X25519PrivateKey.generate()
        self._seeds: dict[str, bytes] | None = None

    def public_key(self) -> bytes:
        """This round's X25519 public key (32 raw bytes), to publish through the server."""
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def secret(self) -> dict[str, Any]:
        """The client's state as a JSON-able dict, raw private key included (base64).

        Lets the round's steps run as separate tasks: the key step stores this on the
        node and the mask and reveal steps rebuild the client with :meth:`from_secret`.
        It must never leave the node: anyone holding it can remove this node's masks.

        >>> c = SecAggClient("a", round=5)
        >>> d = c.secret()
        >>> d["node"], d["round"], sorted(d)
        ('a', 5, ['format', 'node', 'private_key', 'public_key', 'round'])
        >>> SecAggClient.from_secret(d).public_key() == c.public_key()
        True
        """
        raw = self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return {
            "format": SECRET_FORMAT,
            "node": self.node_id,
            "round": self.round,
            "private_key": _b64(raw),
            "public_key": _b64(self.public_key()),
        }

    @classmethod
    def from_secret(
        cls, secret: Mapping[str, Any], fixed_point: FixedPoint | None = None
    ) -> SecAggClient:
        """Rebuild a client from :meth:`secret` (a fresh client: it has masked nothing yet).

        The stored public key must match the private key, which catches a damaged or
        hand-edited secret before it produces masks that never cancel.
        """
        who = _who(secret, None)
        d = _payload(secret, SECRET_FORMAT, who)
        raw = _unb64(_get(d, "private_key", str, who), f"{who}: 'private_key'", _KEY_BYTES)
        client = cls(
            _get(d, "node", str, who),
            _get(d, "round", int, who),
            fixed_point,
            private_key=X25519PrivateKey.from_private_bytes(raw),
        )
        if "public_key" in d and d["public_key"] != _b64(client.public_key()):
            raise SecAggError(f"{who}: the secret's public key does not match its private key")
        return client

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

    def reveal_pair_seed(
        self, dropped_node: str, peers: Mapping[str, bytes] | None = None
    ) -> bytes:
        """The seed this node shares with ``dropped_node``, so the server can unmask the sum.

        Only for a node that dropped out: revealing the seed of a node whose masked
        input the server holds would let it remove one of that node's masks.

        A client that masked this round reuses its seeds. One rebuilt by
        :meth:`from_secret` (the mask ran in another task) recomputes the seed from its
        private key and ``peers``, the round's roster.
        """
        if dropped_node == self.node_id:
            raise SecAggError(f"node {self.node_id!r} will not reveal a seed with itself")
        if self._seeds is not None:
            if dropped_node not in self._seeds:
                raise SecAggError(
                    f"node {dropped_node!r} was not a peer of {self.node_id!r} "
                    f"in round {self.round}"
                )
            return self._seeds[dropped_node]
        if peers is None:
            raise SecAggError(
                f"node {self.node_id!r} has not masked anything this round; "
                "pass the round's roster (peers) to derive the seed"
            )
        self._check_own_key(peers)
        if dropped_node not in peers:
            raise SecAggError(
                f"node {dropped_node!r} is not in the round {self.round} roster of "
                f"{self.node_id!r} (it has: {sorted(peers)})"
            )
        return derive_pair_seed(
            self._private_key, peers[dropped_node], self.round, self.node_id, dropped_node
        )

    def reveal(self, dropped: Sequence[str], peers: Mapping[str, bytes]) -> RevealedSeeds:
        """The pair seeds with every node in ``dropped``, as the payload the server reads.

        Refuses when no other survivor would remain: the server would then hold this
        node's masked vector and every seed needed to strip its masks.
        """
        dropped = sorted(set(dropped))
        if not dropped:
            raise SecAggError(f"node {self.node_id!r}: no dropped nodes to reveal seeds for")
        if self.node_id in dropped:
            raise SecAggError(f"node {self.node_id!r} is listed as dropped but is revealing")
        survivors = set(peers) - set(dropped) - {self.node_id}
        if not survivors:
            raise SecAggError(
                f"node {self.node_id!r} would be the only survivor of round {self.round}: "
                "revealing its seeds would unmask its own update"
            )
        seeds = {d: self.reveal_pair_seed(d, peers) for d in dropped}
        return RevealedSeeds(self.node_id, self.round, seeds)

    def _check_own_key(self, peers: Mapping[str, bytes]) -> None:
        if self.node_id in peers and peers[self.node_id] != self.public_key():
            raise SecAggError(f"the roster holds a different public key for {self.node_id!r}")

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
        self._check_own_key(peers)
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


# --------------------------------------------------------------------------- JSON entry points


def secure_fedavg(
    masked: Mapping[str, Any],
    dropped: set[str] | frozenset[str] = frozenset(),
    revealed: Mapping[str, Any] | None = None,
    *,
    round: int | None = None,
    min_survivors: int = 2,
) -> tuple[Weights, int]:
    """FedAvg of a round's masked JSON payloads: ``(Σ n_k w_k / Σ n_k, Σ n_k)``.

    ``masked`` maps each surviving node to its ``flowfed.secagg_mask`` payload (a
    :meth:`MaskedUpdate.to_json` dict), ``dropped`` names the nodes that published keys
    but sent no masked update, and ``revealed`` maps each survivor to its
    ``flowfed.secagg_reveal`` payload (needed only when ``dropped`` is not empty).
    ``round``, when given, is checked against every payload. Errors name the node.

    >>> a, b = SecAggClient("a", round=1), SecAggClient("b", round=1)
    >>> roster = {"a": a.public_key(), "b": b.public_key()}
    >>> from flowfed.fl.types import Update
    >>> masked = {"a": a.mask_update(Update("a", [np.array([1.0])], 3), roster).to_json(),
    ...           "b": b.mask_update(Update("b", [np.array([5.0])], 1), roster).to_json()}
    >>> secure_fedavg(masked, round=1)
    ([array([2.])], 4)
    """
    updates, seeds = _read_round(masked, dropped, revealed, round)
    return SecAggServer(min_survivors).fedavg(updates, set(dropped), seeds)


def secure_sum(
    masked: Mapping[str, Any],
    dropped: set[str] | frozenset[str] = frozenset(),
    revealed: Mapping[str, Any] | None = None,
    *,
    round: int | None = None,
    min_survivors: int = 2,
) -> Weights:
    """The plain sum ``Σ x_k`` of payloads masked with :meth:`SecAggClient.mask`.

    The DP-FedAvg path: nodes mask their clipped changes ``clip(w_k - w)``, the server
    sums them here, then adds Gaussian noise and divides by the number of survivors
    (``len(masked)``). Arguments as for :func:`secure_fedavg`.
    """
    updates, seeds = _read_round(masked, dropped, revealed, round)
    return SecAggServer(min_survivors).aggregate(updates, set(dropped), seeds)


def _read_round(
    masked: Mapping[str, Any],
    dropped: set[str] | frozenset[str],
    revealed: Mapping[str, Any] | None,
    round: int | None,
) -> tuple[dict[str, MaskedUpdate], dict[tuple[str, str], bytes]]:
    """Parse and cross-check a round's payloads; the server then checks the protocol."""
    updates = {node: MaskedUpdate.from_json(p, sender=node) for node, p in masked.items()}
    # Misfiled payloads and disagreeing rounds among them are SecAggServer's to refuse.
    if round is not None:
        for node, mu in updates.items():
            if mu.round != round:
                raise SecAggError(
                    f"node {node!r} sent a masked update for round {mu.round}, "
                    f"expected round {round}"
                )
    revealed = revealed or {}
    rounds = {mu.round for mu in updates.values()}
    expected_round = round if round is not None else (rounds.pop() if len(rounds) == 1 else None)
    seeds: dict[tuple[str, str], bytes] = {}
    for node, payload in revealed.items():
        r = RevealedSeeds.from_json(payload, sender=node)
        if r.node != node:
            raise SecAggError(f"revealed seeds filed under {node!r} come from {r.node!r}")
        if node not in updates:
            raise SecAggError(
                f"node {node!r} revealed seeds but sent no masked update: only survivors reveal"
            )
        if expected_round is not None and r.round != expected_round:
            raise SecAggError(
                f"node {node!r} revealed seeds for round {r.round}, expected round {expected_round}"
            )
        for d, seed in r.seeds.items():
            if d not in dropped:
                raise SecAggError(
                    f"node {node!r} revealed its seed with {d!r}, which did not drop out"
                )
            seeds[(node, d)] = seed
    if dropped:
        for node in sorted(updates):
            missing = sorted(set(dropped) - {d for s, d in seeds if s == node})
            if missing:
                raise SecAggError(
                    f"node {node!r} has not revealed its pair seeds with the dropped "
                    f"node(s) {missing}; run flowfed.secagg_reveal on it"
                )
    return updates, seeds
