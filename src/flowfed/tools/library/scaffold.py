"""The client side of SCAFFOLD (Karimireddy et al. 2020), for trainers to call.

A trainer supports ``strategy: scaffold`` by having a ``scaffold_c`` config field (the
server's control variate ``c``, flattened per tensor; ``[]`` means zeros, ``None`` that
the step does not run SCAFFOLD) and doing three things:

1. :func:`control_start` before training: ``c``, its own ``c_i`` (kept on the node in
   ``ctx.client_state``) and the correction ``c - c_i`` to add to every gradient;
2. its local steps with ``g + (c - c_i)`` instead of ``g``;
3. :func:`control_finish` after ``K`` local steps at learning rate ``η``: option II of
   the paper, ``c_i⁺ = c_i - c + (x - y_i) / (K·η)``, stored back on the node; it returns
   ``Δc_i = c_i⁺ - c_i`` for the trainer to put in its model's ``training`` block as
   ``control_delta`` (lists of floats, one per tensor), which the server aggregates
   beside the model (``y_i``): ``x += η_g·mean(y_i - x)``, ``c += (|S|/N)·mean(Δc_i)``.

Example (one tensor, no state yet, so ``c_i = 0``):
    >>> import numpy as np
    >>> from flowfed.tools import Context
    >>> from flowfed.tools.client_state import ClientState
    >>> ctx = Context(None); ctx._client_state = ClientState()
    >>> x = [np.zeros(2)]
    >>> run = control_start(ctx, [[0.5, 0.5]], x)
    >>> run.correction
    [array([0.5, 0.5])]
    >>> y = [np.array([-1.0, 1.0])]                  # after K=2 steps at η=0.5
    >>> control_finish(ctx, run, x, y, steps=2, learning_rate=0.5)
    [array([ 0.5, -1.5])]
    >>> ctx.client_state["scaffold.c_i.0"]
    array([ 0.5, -1.5])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowfed.tools import Context

Weights = list[np.ndarray]

#: The client-state key of tensor ``k`` of ``c_i``.
KEY = "scaffold.c_i.{}"


@dataclass
class ControlRun:
    """One round's control variates: the server's ``c``, the node's ``c_i``, and the
    gradient correction ``c - c_i``."""

    c: Weights
    c_i: Weights
    correction: Weights


def control_start(ctx: Context, scaffold_c: list[list[float]], start: Weights) -> ControlRun:
    """``c`` from the config (``[]``: zeros), ``c_i`` from the node's client state (zeros
    on a node's first round), shaped like the round's starting weights ``start``."""
    shapes = [np.shape(w) for w in start]
    if scaffold_c:
        if len(scaffold_c) != len(shapes):
            raise ValueError(f"scaffold_c has {len(scaffold_c)} tensors, the model {len(shapes)}")
        c = []
        for k, (flat, shape) in enumerate(zip(scaffold_c, shapes, strict=True)):
            arr = np.asarray(flat, dtype=np.float64)
            if arr.size != int(np.prod(shape)):
                raise ValueError(
                    f"scaffold_c tensor {k} has {arr.size} values, the model's {shape}"
                )
            c.append(arr.reshape(shape))
    else:
        c = [np.zeros(shape) for shape in shapes]
    state = ctx.client_state
    c_i = []
    for k, shape in enumerate(shapes):
        held = state.get(KEY.format(k))
        if held is not None and np.shape(held) != shape:
            raise ValueError(
                f"this node's SCAFFOLD state tensor {k} has shape {np.shape(held)}, the "
                f"model {shape}: the model changed under a kept client state"
            )
        c_i.append(np.zeros(shape) if held is None else np.asarray(held, dtype=np.float64))
    return ControlRun(c, c_i, [ck - cik for ck, cik in zip(c, c_i, strict=True)])


def control_finish(
    ctx: Context, run: ControlRun, start: Weights, trained: Weights, *, steps: int,
    learning_rate: float,
) -> Weights:  # fmt: skip
    """Option II's ``c_i⁺``, stored on the node; returns ``Δc_i = c_i⁺ - c_i``."""
    if steps < 1 or learning_rate <= 0:
        raise ValueError("SCAFFOLD needs at least one local step and a positive learning rate")
    scale = 1.0 / (steps * learning_rate)
    new = [
        cik - ck + (np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) * scale
        for cik, ck, x, y in zip(run.c_i, run.c, start, trained, strict=True)
    ]
    for k, value in enumerate(new):
        ctx.client_state[KEY.format(k)] = value
    return [n - o for n, o in zip(new, run.c_i, strict=True)]


def as_lists(weights: Weights) -> list[list[float]]:
    """Tensors as flat lists of floats (what ``training['control_delta']`` holds)."""
    return [np.ravel(w).astype(np.float64).tolist() for w in weights]
