"""One federated round under secure aggregation, as the federated driver runs it.

Split out of :mod:`flowfed.engine.federated` (which keeps the round loop): the secure
round is its own protocol of five phases (keys, roster, training, masking, the central
sum), each a batch of placed tasks, and reads best on its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import TYPE_CHECKING, Any

from flowfed.engine.fl_tools import roster_tool, secure_aggregate_tool
from flowfed.engine.placed import StepFailed
from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.runtime.lifecycle import State
from flowfed.tools.core import build_spec

if TYPE_CHECKING:
    from flowfed.engine.federated import FederatedDriver


def secure_round(
    d: FederatedDriver,
    pool: cf.Executor,
    r: int,
    chosen: list[tuple[str, str | None]],
    model_ref: ArtifactRef | None,
) -> tuple[list[tuple[TaskRun, int]], ArtifactRef]:
    """One round under secure aggregation (Bonawitz et al. 2017, with dropouts).

    keys on every participant → roster → local training (updates stay on the nodes)
    → masking → (reveal of the dropped nodes' pair seeds by the survivors) → the
    central sum, which is all the server ever sees in the clear.
    """
    s, fed = d.settings, d.fed
    deadline = None if s.round_timeout is None else time.monotonic() + s.round_timeout
    need = max(2, min(s.min_nodes or len(chosen), len(chosen)))
    # 1. fresh keys on each participant
    keys = [
        d._child(
            d._node_task(
                "flowfed.secagg_keys",
                w,
                r,
                "keys",
                ["public_key", "secret"],
                ["public_key"],
                {"node": w[0], "round": r},
            ),
            {},
        )
        for w in chosen
    ]
    keyed = d._run_batch(pool, r, keys, need, deadline, "keys")
    # 2. the roster, as a central artifact the mask tasks consume
    roster_spec = build_spec(
        roster_tool, name="flowfed.fl_roster", version="1.0", type="data-transformation"
    )
    names = [k.node.node for k in keyed]
    roster_task = d._child(
        d._central_task(roster_spec, r, "roster", {"nodes": names}),
        {"public_keys": [k.outputs["public_key"] for k in keyed]},
    )
    d._execute(roster_task)
    if roster_task.state is not State.FINISHED:
        msg = (roster_task.error or {}).get("message", "failed")
        raise StepFailed(f"federated step '{d.tr.step}', round {r}: roster: {msg}")
    roster_ref = roster_task.outputs["output"]
    secret_of = {k.node.node: k.outputs["secret"] for k in keyed}
    where_of = {k.node.node: (k.node.node, k.node.dataset) for k in keyed}
    # 3. local training: the trained model stays on the node
    trained = d._train_children(r, [where_of[n] for n in names], model_ref)
    trained_ok = d._run_batch(pool, r, trained, need, deadline, "training")
    # 4. masking (DP: the clipped change from the global model)
    dp = s.privacy
    base_ref = model_ref
    if base_ref is None:
        base_ref = d._template(pool, r, trained_ok[0])
    masks = []
    for c in trained_ok:
        config: dict[str, Any] = {"node": c.node.node, "round": r}
        inputs: dict[str, Any] = {
            "update": c.outputs[fed.model_output],
            "secret": secret_of[c.node.node],
            "roster": roster_ref,
        }
        if dp is not None:
            config["clip_norm"] = dp.clip_norm
            inputs["global_model"] = base_ref
        masks.append(
            d._child(
                d._node_task(
                    "flowfed.secagg_mask",
                    where_of[c.node.node],
                    r,
                    "mask",
                    ["masked"],
                    ["masked"],
                    config,
                ),
                inputs,
            )
        )
    masked_ok = d._run_batch(pool, r, masks, need, deadline, "masking")
    survivors = [m.node.node for m in masked_ok]
    dropped = sorted(set(names) - set(survivors))
    # 5. survivors reveal their pair seeds with the nodes that dropped out
    reveals: list[TaskRun] = []
    if dropped:
        reveals = [
            d._child(
                d._node_task(
                    "flowfed.secagg_reveal",
                    where_of[n],
                    r,
                    "reveal",
                    ["seeds"],
                    ["seeds"],
                    {"node": n, "round": r, "dropped": dropped},
                ),
                {"secret": secret_of[n], "roster": roster_ref},
            )
            for n in survivors
        ]
        # every survivor's seeds are needed to cancel the dropped nodes' masks
        d._run_batch(pool, r, reveals, len(reveals), None, "reveal")
    # 6. the central secure sum
    agg_spec = build_spec(
        secure_aggregate_tool(d.server),
        name="flowfed.fl_secure_aggregate",
        version="1.0",
        type="analysis",
    )
    inputs = {
        "masked": [m.outputs["masked"] for m in masked_ok],
        "seeds": [x.outputs["seeds"] for x in reveals],
        "global_model": base_ref,
    }
    agg = d._child(
        d._central_task(
            agg_spec,
            r,
            "aggregate",
            {
                "round": r,
                "survivors": survivors,
                "dropped": dropped,
                "revealers": [x.node.node for x in reveals],
                "metrics": d._round_metrics(
                    r, [(c, int(c.metrics.get("examples", 0)) or 1) for c in trained_ok]
                ),
            },
        ),
        inputs,
    )
    d._execute(agg)
    if agg.state is not State.FINISHED:
        msg = (agg.error or {}).get("message", str(agg.state))
        raise StepFailed(f"federated step '{d.tr.step}', round {r}: secure aggregation: {msg}")
    by_node = {c.node.node: c for c in trained_ok}
    done = [(by_node[n], int(by_node[n].metrics.get("examples", 0)) or 1) for n in survivors]
    return done, agg.outputs["output"]
