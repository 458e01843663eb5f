"""Node-side secure aggregation: the three tools a ``secure_aggregation: true`` round runs.

Per round, on every participating node (see docs/federated.md, "Secure aggregation as
tools"):

1. ``flowfed.secagg_keys`` makes a fresh X25519 key pair: ``public_key`` travels to the
   server, ``secret`` stays in the node's store.
2. The step's trainer runs; its model stays on the node.
3. ``flowfed.secagg_mask`` masks the trained model with the pair masks of the round's
   roster; only the ``masked`` payload, uniformly random on its own, leaves the node.
4. After a dropout, ``flowfed.secagg_reveal`` on each survivor hands the server the
   pair seeds it shares with the dropped nodes, so their masks can be removed.

The server side is :func:`flowfed.fl.secagg.secure_fedavg` (or ``secure_sum`` for the
DP-FedAvg path) over the JSON payloads.

All three are ``data-transformation`` tools: they re-encode data (keys, a masked vector,
seeds) and produce no model, which is the planner's rule for that type. They are not
``analysis`` (nothing is trained) nor ``preprocessing`` (the output is not a prepared
table but a protocol message).

Nothing about an update's values (norms, example counts) is logged: logs and metrics
travel to the server, and secure aggregation exists to keep them from it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from flowfed.tools import Context, tool

if TYPE_CHECKING:
    from flowfed.fl.secagg import SecAggClient

# flowfed.fl is imported inside the tools: its package pulls in the privacy accountant
# (dp-accounting, scipy), which every other built-in tool would otherwise pay for.

_PLACEHOLDER_NODE = "local"  # Context's default node name: no real node identity


def _never_cache(config: dict[str, Any]) -> str | None:
    """Key generation must never be served from the cache: a reused key pair in a later
    run of the same round would reuse its masks, and two inputs masked alike hand the
    server their difference. ``None`` tells the engine the source cannot be versioned,
    which turns caching off for the task."""
    return None


def _expected(
    ctx: Context | None, node: str | None, round: int | None
) -> tuple[str | None, int | None]:
    """The node and round this task works for, as far as known: the config's, else the
    context's; ``None`` where neither says.

    The driver passes both as config (not every executor fills ``ctx.round``, and a local
    run calls every node ``local``). Where the config and a real context both speak they
    must agree: a secret handed to the wrong node or round is a routing bug worth stopping on.
    """
    ctx_node = getattr(ctx, "node", None)
    ctx_round = getattr(ctx, "round", None)
    real_ctx_node = ctx_node if ctx_node and ctx_node != _PLACEHOLDER_NODE else None
    if node is not None and real_ctx_node is not None and node != real_ctx_node:
        raise ValueError(
            f"config node {node!r} but this task runs on node {real_ctx_node!r}; "
            "secure-aggregation tasks must run on the node they are configured for"
        )
    who = node or real_ctx_node
    if round is not None and ctx_round is not None and round != ctx_round:
        raise ValueError(f"node {who!r}: config round {round} but the task's round is {ctx_round}")
    return who, round if round is not None else ctx_round


def _identity(ctx: Context | None, node: str | None, round: int | None) -> tuple[str, int]:
    """The node and round a new key pair is for; both must be known."""
    who, rnd = _expected(ctx, node, round)
    if who is None:
        raise ValueError("cannot tell which node this is: set the config field 'node'")
    if rnd is None:
        raise ValueError(f"node {who!r}: cannot tell the round: set the config field 'round'")
    return who, int(rnd)


def _restore(
    secret: Any, ctx: Context | None, node: str | None, round: int | None, frac_bits: int = 24
) -> SecAggClient:
    """The node's client for this round, rebuilt from its stored secret and checked
    against the node and round this task is for (where known)."""
    from flowfed.fl.secagg import FixedPoint, SecAggClient, SecAggError

    client = SecAggClient.from_secret(secret, FixedPoint(frac_bits))
    who, rnd = _expected(ctx, node, round)
    if who is not None and who != client.node_id:
        raise SecAggError(f"node {who!r} was given the secret of node {client.node_id!r}")
    if rnd is not None and rnd != client.round:
        raise SecAggError(
            f"node {client.node_id!r}: the secret is for round {client.round}, "
            f"but this task is for round {rnd}"
        )
    return client


def _roster(client: SecAggClient, roster: Any) -> dict[str, bytes]:
    """The decoded roster, which must list this node with this round's own public key."""
    from flowfed.fl.secagg import SecAggError, decode_roster

    peers = decode_roster(roster)
    me = client.node_id
    if me not in peers:
        raise SecAggError(
            f"node {me!r} is not in the round {client.round} roster (it has: {sorted(peers)})"
        )
    if peers[me] != client.public_key():
        raise SecAggError(
            f"the round {client.round} roster holds a different public key for node {me!r} "
            "than its secret: the roster is from another round or was tampered with"
        )
    return peers


class SecAggKeys(NamedTuple):
    """The two outputs of ``flowfed.secagg_keys``."""

    public_key: str
    secret: dict[str, Any]


@tool(
    name="flowfed.secagg_keys",
    version="1.0",
    type="data-transformation",
    source_version=_never_cache,
)
def secagg_keys(ctx: Context, *, node: str | None = None, round: int | None = None) -> SecAggKeys:
    """Make this node's fresh X25519 key pair for one secure-aggregation round.

    ``public_key`` (base64 of the 32 raw bytes) is shareable: the driver collects every
    participant's into the round's roster. ``secret`` (node, round, private key) must stay
    on the node; the mask and reveal steps take it back as a node-local input. ``node`` and
    ``round`` default to the task context's. Never cached: every run gets new keys.
    """
    from flowfed.fl.secagg import SecAggClient

    who, rnd = _identity(ctx, node, round)
    client = SecAggClient(who, rnd)
    if ctx is not None:
        ctx.log(f"node {who!r}: new key pair for secure-aggregation round {rnd}")
    return SecAggKeys(base64.b64encode(client.public_key()).decode("ascii"), client.secret())


@tool(name="flowfed.secagg_mask", version="1.0", type="data-transformation", outputs=["masked"])
def secagg_mask(
    update: Any,
    secret: dict[str, Any],
    roster: dict[str, str],
    ctx: Context,
    global_model: Any = None,
    *,
    clip_norm: float | None = None,
    num_examples: int | None = None,
    frac_bits: int = 24,
    node: str | None = None,
    round: int | None = None,
) -> dict[str, Any]:
    """Mask a trained model for secure aggregation; only the masked payload leaves the node.

    Without ``clip_norm``: secure FedAvg. The payload masks ``n · weights`` and ``n``, with
    ``n = num_examples`` or the model's ``training["rows"]``; the server learns only
    ``Σ n_k w_k`` and ``Σ n_k`` (``secure_fedavg``). With ``clip_norm``: DP-FedAvg. The
    change ``update - global_model`` is clipped to that L2 norm and masked unweighted; the
    server sums the changes (``secure_sum``), adds noise and averages. ``update`` and
    ``global_model`` are models with ``get_weights()`` (e.g. ``flowfed.logistic_regression``);
    ``roster`` is the round's ``{node: base64 public key}``; all nodes must use the same
    ``frac_bits`` (fixed-point fractional bits).
    """
    from flowfed.fl.privacy import clip_update
    from flowfed.fl.secagg import SecAggError
    from flowfed.fl.types import Update, check_weights, shapes_of

    client = _restore(secret, ctx, node, round, frac_bits)
    me = client.node_id
    peers = _roster(client, roster)
    weights = _weights_of(update, "update", me)
    if clip_norm is not None:
        if num_examples is not None:
            raise SecAggError(
                f"node {me!r}: num_examples has no effect with clip_norm (DP-FedAvg counts "
                "every node equally); remove one of them"
            )
        if global_model is None:
            raise SecAggError(
                f"node {me!r}: clip_norm clips the change from the global model; "
                "wire the round's global_model input"
            )
        base = _weights_of(global_model, "global_model", me)
        check_weights(weights, shapes_of(base), f"node {me!r}: update vs global_model")
        delta = [w - g for w, g in zip(weights, base, strict=True)]
        masked = client.mask(clip_update(delta, clip_norm), peers)
        how = f"clipped change (clip_norm {clip_norm})"
    else:
        n = num_examples if num_examples is not None else _rows(update, me)
        masked = client.mask_update(Update(me, weights, n), peers)
        how = "weighted update"
    if ctx is not None:
        ctx.log(
            f"node {me!r}: masked its {how} ({masked.data.size} values) for "
            f"{len(masked.participants)} participants, round {client.round}"
        )
    return masked.to_json()


@tool(name="flowfed.secagg_reveal", version="1.0", type="data-transformation", outputs=["seeds"])
def secagg_reveal(
    secret: dict[str, Any],
    roster: dict[str, str],
    ctx: Context,
    *,
    dropped: list[str],
    node: str | None = None,
    round: int | None = None,
) -> dict[str, Any]:
    """Reveal this survivor's pair seeds with the ``dropped`` nodes, to unmask the round.

    Runs on each node that sent a masked update when others published keys but sent
    none. The seeds are recomputed from the stored ``secret`` and the round's ``roster``;
    every dropped node must be in the roster, and a node refuses when it would be the
    only survivor (the server could then unmask its update). Output ``seeds``:
    ``{format, node, round, seeds: {dropped node: base64 seed}}``, for ``secure_fedavg``.
    """
    from flowfed.fl.secagg import SecAggError

    client = _restore(secret, ctx, node, round)
    peers = _roster(client, roster)
    unknown = sorted(set(dropped) - set(peers))
    if unknown:
        raise SecAggError(
            f"node {client.node_id!r}: dropped node(s) {unknown} are not in the round "
            f"{client.round} roster (it has: {sorted(peers)})"
        )
    revealed = client.reveal(dropped, peers)
    if ctx is not None:
        ctx.log(
            f"node {client.node_id!r}: revealed its pair seeds with dropped node(s) "
            f"{sorted(revealed.seeds)}, round {client.round}"
        )
    return revealed.to_json()


def _weights_of(model: Any, what: str, node: str) -> list[Any]:
    from flowfed.fl.secagg import SecAggError

    get = getattr(model, "get_weights", None)
    if not callable(get):
        raise SecAggError(
            f"node {node!r}: input {what!r} is a {type(model).__name__}, not a model with "
            "get_weights()"
        )
    return [np.asarray(w, dtype=np.float64) for w in get()]


def _rows(update: Any, node: str) -> int:
    from flowfed.fl.secagg import SecAggError

    training = getattr(update, "training", None)
    rows = training.get("rows") if isinstance(training, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
        raise SecAggError(
            f"node {node!r}: the update records no positive training['rows'] "
            f"(found {rows!r}); set num_examples"
        )
    return rows


@tool(name="flowfed.fl_template", version="1.0", type="data-transformation", outputs=["template"])
def fl_template(update: Any, ctx: Context) -> Any:
    """The node's trained model with every weight set to zero: its shape, not its values.

    Under secure aggregation the server never holds a node's model, yet it needs one
    model object to put the aggregated weights into (its class, features, target). In a
    federated step's first round without an initial model, one participant sends this.
    """
    import numpy as np

    get = getattr(update, "get_weights", None)
    if get is None or not hasattr(update, "with_weights"):
        raise TypeError(f"{type(update).__name__} has no get_weights()/with_weights()")
    template = update.with_weights([np.zeros_like(np.asarray(w, dtype=np.float64)) for w in get()])
    if hasattr(template, "training"):
        template.training = {"template": True}
    ctx.log("sent a zero-weight template of the model (no trained values)")
    return template
