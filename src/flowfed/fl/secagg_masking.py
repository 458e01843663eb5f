"""Secure aggregation, phases 1, 3 and 5 on a node: keys, masking, revealing seeds.

:class:`SecAggClient` is one node's side of one round: it makes the round's X25519 key
pair, masks the node's update with the pair masks of every peer, and, when peers drop
out, reveals its seeds with them (and only them). It keeps every check that protects the
node: it masks once, refuses a roster with its key swapped or two equal keys, refuses
values past the fixed-point limit, and never reveals a seed that would leave it the only
survivor. A room of its own: this is all the code that runs on a node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flowfed.fl.secagg_encoding import FixedPoint, flatten_weights
from flowfed.fl.secagg_keys import KEY_BYTES, SecAggError, derive_pair_seed, mask_vector
from flowfed.fl.secagg_messages import (
    SECRET_FORMAT,
    MaskedUpdate,
    RevealedSeeds,
    from_b64,
    payload_field,
    payload_sender,
    read_payload,
    to_b64,
)
from flowfed.fl.types import Update, Weights, check_weights, shapes_of

__all__ = ["SecAggClient"]


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
            "private_key": to_b64(raw),
            "public_key": to_b64(self.public_key()),
        }

    @classmethod
    def from_secret(
        cls, secret: Mapping[str, Any], fixed_point: FixedPoint | None = None
    ) -> SecAggClient:
        """Rebuild a client from :meth:`secret` (a fresh client: it has masked nothing yet).

        The stored public key must match the private key, which catches a damaged or
        hand-edited secret before it produces masks that never cancel.
        """
        who = payload_sender(secret, None)
        d = read_payload(secret, SECRET_FORMAT, who)
        raw = from_b64(
            payload_field(d, "private_key", str, who), f"{who}: 'private_key'", KEY_BYTES
        )
        client = cls(
            payload_field(d, "node", str, who),
            payload_field(d, "round", int, who),
            fixed_point,
            private_key=X25519PrivateKey.from_private_bytes(raw),
        )
        if "public_key" in d and d["public_key"] != to_b64(client.public_key()):
            raise SecAggError(f"{who}: the secret's public key does not match its private key")
        return client

    def mask(self, weights: Weights, peers: Mapping[str, bytes]) -> MaskedUpdate:
        """Mask ``weights`` for a plain secure sum over this node and ``peers``.

        ``peers`` is the round's roster ``{node: public_key}``; it may include this node
        itself (with its own key), so the server can send everyone the same roster.
        """
        return self._mask(flatten_weights(weights), shapes_of(weights), peers, weighted=False)

    def mask_update(self, update: Update, peers: Mapping[str, bytes]) -> MaskedUpdate:
        """Mask ``num_examples · weights`` and ``num_examples`` for a secure FedAvg.

        The server then learns only ``Σ n_k w_k`` and ``Σ n_k``, whose ratio is FedAvg.
        """
        if update.node != self.node_id:
            raise SecAggError(f"client {self.node_id!r} cannot mask the update of {update.node!r}")
        if update.num_examples <= 0:
            raise SecAggError(f"node {self.node_id!r}: num_examples must be positive")
        n = float(update.num_examples)
        flat = np.concatenate([flatten_weights(update.weights) * n, [n]])
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
