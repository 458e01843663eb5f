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

Where each part lives (this module only gathers them, so callers import from one place):

- :mod:`flowfed.fl.secagg_keys`: phases 1-2, the X25519 + HKDF pair seeds and the
  ChaCha20 masks they seed; :class:`SecAggError`.
- :mod:`flowfed.fl.secagg_encoding`: the fixed-point ring encoding, flattening the tensors.
- :mod:`flowfed.fl.secagg_messages`: the JSON form of every message, read with every check.
- :mod:`flowfed.fl.secagg_masking`: phases 1, 3 and 5 on a node (:class:`SecAggClient`).
- :mod:`flowfed.fl.secagg_unmasking`: phases 4 and 5 on the server (:class:`SecAggServer`,
  :func:`secure_fedavg`, :func:`secure_sum`): the sum, unmasked, with dropouts recovered.
"""

from __future__ import annotations

from flowfed.fl.secagg_encoding import FixedPoint
from flowfed.fl.secagg_keys import SecAggError, derive_pair_seed, mask_vector
from flowfed.fl.secagg_masking import SecAggClient
from flowfed.fl.secagg_messages import (
    MASKED_FORMAT,
    SECRET_FORMAT,
    SEEDS_FORMAT,
    MaskedUpdate,
    RevealedSeeds,
    decode_roster,
    encode_roster,
)
from flowfed.fl.secagg_unmasking import SecAggServer, secure_fedavg, secure_sum

__all__ = [
    "MASKED_FORMAT",
    "SECRET_FORMAT",
    "SEEDS_FORMAT",
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
