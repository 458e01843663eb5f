"""Node-side federated evaluation: the global model on each node's own validation rows.

A federated step with ``validation: test`` runs, every ``evaluate_every`` rounds, on a
``fraction_evaluate`` of its participants:

* ``flowfed.fl_evaluate``: the round's global model on the node's validation table. Its
  output ``evaluation`` is three numbers, ``{rows, val_loss, val_accuracy}``: an
  aggregate the node's egress policy checks like any other (at least ``min_rows`` rows),
  and each is reported as a metric (filtered by the node's policy too).
* under secure aggregation, ``flowfed.fl_eval_mask``: that output stays on the node and
  only ``[rows · val_loss, rows · val_accuracy, rows]``, masked with the pair masks of a
  fresh roster, leaves it; the server unmasks only the sums over the nodes, so it learns
  the row-weighted mean validation loss and accuracy and nothing per node.

Example:
    >>> import numpy as np
    >>> binary_log_loss(np.array([1.0, 0.0]), np.array([0.8, 0.4]))
    0.367...
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flowfed.tools import Context, tool
from flowfed.tools.core import Model
from flowfed.tools.library._common import binary_labels


def binary_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]`` (float64
    machine epsilon, as scikit-learn's ``log_loss`` does).

    >>> round(binary_log_loss(np.array([1.0]), np.array([1.0])), 12)
    0.0
    """
    eps = float(np.finfo(np.float64).eps)
    q = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))


@tool(name="flowfed.fl_evaluate", version="1.0", type="evaluation", outputs=["evaluation"])
def fl_evaluate(
    model: Model,
    table: pd.DataFrame,
    ctx: Context,
    *,
    target: str | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Federated evaluation: the global model's validation loss and accuracy here.

    A binary classifier on this node's ``table``. ``model`` needs
    ``predict_proba(table)`` (``P(class 1)`` per row), as the built-in models have;
    ``target`` defaults to the model's own target column. Returns
    ``{"rows", "val_loss", "val_accuracy"}`` (``val_loss`` is the mean binary
    cross-entropy) and reports ``val_loss`` and ``val_accuracy`` as metrics.
    """
    predict = getattr(model, "predict_proba", None)
    if not callable(predict):
        raise TypeError(
            f"flowfed.fl_evaluate: {type(model).__name__} has no predict_proba(table); "
            "name an evaluate_tool of your own for this model"
        )
    column = target or getattr(model, "target", None) or "target"
    y = binary_labels(table, column)
    if len(y) == 0:
        raise ValueError("flowfed.fl_evaluate: the validation table has no rows")
    proba = np.asarray(predict(table), dtype=np.float64).reshape(-1)
    if proba.shape != y.shape:
        raise ValueError(
            f"flowfed.fl_evaluate: predict_proba gave {proba.size} values for {y.size} rows"
        )
    loss = binary_log_loss(y, proba)
    accuracy = float(np.mean((proba >= threshold) == (y == 1.0)))
    r = getattr(ctx, "round", None)  # the federated round: the dashboard's x axis
    ctx.metric("val_loss", loss, step=r)
    ctx.metric("val_accuracy", accuracy, step=r)
    return {"rows": len(y), "val_loss": loss, "val_accuracy": accuracy}


@tool(name="flowfed.fl_eval_mask", version="1.0", type="data-transformation", outputs=["masked"])
def fl_eval_mask(
    evaluation: dict[str, Any],
    secret: dict[str, Any],
    roster: dict[str, str],
    ctx: Context,
    *,
    node: str | None = None,
    round: int | None = None,
) -> dict[str, Any]:
    """Mask ``[rows · val_loss, rows · val_accuracy, rows]`` for a secure sum.

    ``secret`` and ``roster`` are a fresh key pair's (``flowfed.secagg_keys``) and the
    evaluation's roster: never the round's training keys, so no mask is used twice.
    """
    from flowfed.fl.secagg import SecAggError
    from flowfed.tools.library.federated import _restore, _roster

    client = _restore(secret, ctx, node, round)
    peers = _roster(client, roster)
    try:
        rows = float(evaluation["rows"])
        vec = np.array(
            [rows * float(evaluation["val_loss"]), rows * float(evaluation["val_accuracy"]), rows]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SecAggError(
            f"node {client.node_id!r}: the evaluation must hold rows, val_loss and "
            f"val_accuracy ({exc})"
        ) from None
    if not np.all(np.isfinite(vec)) or rows <= 0:
        raise SecAggError(f"node {client.node_id!r}: the evaluation holds a non-finite value")
    masked = client.mask([vec], peers)
    ctx.log(f"node {client.node_id!r}: masked its evaluation for round {client.round}")
    return masked.to_json()
