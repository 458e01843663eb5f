"""Secure aggregation, phases 4 and 5 on the server: sum, unmask, recover from dropouts.

:class:`SecAggServer` adds the masked vectors (the pair masks cancel), removes the masks
of dropped nodes from the seeds the survivors revealed, and decodes the sum. Before any
arithmetic it checks the protocol: every participant sent or dropped, all agree on the
round and shapes, enough survivors remain, exactly the needed seeds were revealed.
:func:`secure_fedavg` and :func:`secure_sum` are the same from a round's JSON payloads,
as the server's FL tools call them. A room of its own: this is all the code that runs on
the server, and the only place a sum is unmasked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flowfed.fl.secagg_encoding import FixedPoint, unflatten_weights
from flowfed.fl.secagg_keys import SecAggError, mask_vector
from flowfed.fl.secagg_messages import MaskedUpdate, RevealedSeeds
from flowfed.fl.types import Weights

__all__ = ["SecAggServer", "secure_fedavg", "secure_sum"]


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
        return unflatten_weights(fp.decode(total), first.shapes)

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
        return unflatten_weights(decoded[:-1] / examples, first.shapes), round(examples)

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

    >>> from flowfed.fl.secagg import SecAggClient
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
