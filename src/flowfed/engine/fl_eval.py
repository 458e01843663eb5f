"""Evaluation during federated training: federated (on the nodes) and central.

After every ``evaluate_every``-th round (and the last) of a federated step:

* **federated evaluation** (``validation: <step input>``): ``ceil(fraction_evaluate · n)``
  participants, drawn with a per-round generator seeded from the flow's ``seed`` (so the
  training sample's stream is not touched), each run the ``evaluate_tool`` (default
  ``flowfed.fl_evaluate``) on the round's global model and their own validation rows.
  In a plain step each node's ``{rows, val_loss, val_accuracy}`` leaves the node as its
  egress policy decides, and the server pools them weighted by rows. Under secure
  aggregation they stay on the nodes: each masks ``[rows·loss, rows·acc, rows]`` with a
  fresh roster's pair masks and the server unmasks only the sums.
* **central evaluation** (``evaluate_fn: <tool>``): a central tool given the global model
  returns ``{metric: number}``, stored as ``central_<metric>``.

The aggregated ``val_loss``/``val_accuracy`` (and ``val_rows``, the rows they cover) are
the step's metrics with the round as their step; per node they are the metrics of each
evaluation task (round ``r``). Early stopping may watch any of them.

Example:
    >>> pool_evaluations([{"rows": 10, "val_loss": 0.5, "val_accuracy": 0.8},
    ...                   {"rows": 30, "val_loss": 0.1, "val_accuracy": 1.0}])
    {'val_loss': 0.2, 'val_accuracy': 0.95, 'val_rows': 40.0}
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.engine.placed import StepFailed
from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.plan.federated import sample
from flowfed.plan.fl_evaluation import central_eval_task, eval_count, eval_task, evaluates
from flowfed.runtime.lifecycle import State
from flowfed.tools.core import Context, build_spec

if TYPE_CHECKING:
    from flowfed.engine.federated import FederatedDriver


def pool_evaluations(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The row-weighted means of the nodes' ``val_loss`` and ``val_accuracy``."""
    rows = sum(float(r["rows"]) for r in results)
    if rows <= 0:
        return {}
    loss = sum(float(r["rows"]) * float(r["val_loss"]) for r in results) / rows
    acc = sum(float(r["rows"]) * float(r["val_accuracy"]) for r in results) / rows
    return {"val_loss": loss, "val_accuracy": acc, "val_rows": rows}


def eval_secure_sum_tool(masked: list[dict], ctx: Context, *, round: int = 1) -> dict:
    """Unmask the sum of the nodes' masked evaluations: the pooled figures, none per node."""
    from flowfed.fl.secagg import secure_sum

    nodes = [str(p.get("node")) for p in masked]
    total = secure_sum(dict(zip(nodes, masked, strict=True)), round=round)[0]
    loss_sum, acc_sum, rows = (float(x) for x in np.asarray(total).reshape(-1)[:3])
    ctx.log(f"round {round}: secure sum of {len(nodes)} masked evaluation(s)")
    if rows < 0.5:
        raise ValueError(f"round {round}: the unmasked evaluation covers no rows")
    rows = float(round_half(rows))
    return {"val_loss": loss_sum / rows, "val_accuracy": acc_sum / rows, "val_rows": rows}


def round_half(x: float) -> int:
    """A fixed-point row count back to the integer it encoded."""
    return math.floor(x + 0.5)


class Evaluator:
    """The evaluation phase of one federated step's driver (see the module docstring)."""

    def __init__(self, driver: FederatedDriver) -> None:
        self.d = driver
        self.s = driver.settings

    def due(self, r: int) -> bool:
        return evaluates(self.s, r)

    def evaluate(
        self, pool: cf.Executor, r: int, model_ref: ArtifactRef | None
    ) -> dict[str, float]:
        """Round ``r``'s evaluation metrics (empty when it does not evaluate)."""
        if model_ref is None or not self.due(r):
            return {}
        out: dict[str, float] = {}
        if self.s.validation is not None:
            out.update(self._federated(pool, r, model_ref))
        if self.s.evaluate_fn is not None:
            out.update(self._central(r, model_ref))
        return out

    # -- federated --------------------------------------------------------------------------

    def _federated(self, pool: cf.Executor, r: int, model_ref: ArtifactRef) -> dict[str, float]:
        d, s = self.d, self.s
        parts = d.fed.participants
        rng = np.random.default_rng([s.seed, r, 0xE7A1])
        chosen = sample(parts, eval_count(s, len(parts)), rng)
        tool = _tool(s.evaluate_tool)
        model_param, table_param = list(tool.inputs)[:2]
        index = {p: i for i, p in enumerate(parts)}
        assert s.validation is not None
        refs = d.tr.inputs[s.validation]
        assert isinstance(refs, list)
        secure = bool(s.secure_aggregation)
        children = [
            d._child(
                eval_task(d.node, tool, w, r, secure=secure),
                {model_param: model_ref, table_param: refs[index[w]]},
            )
            for w in chosen
        ]
        try:
            ok = d._run_batch(pool, r, children, 1, None, "evaluation")
        except StepFailed as exc:
            self._warn(r, f"no federated evaluation: {exc}")
            return {}
        if secure:
            return self._secure(pool, r, ok)
        results: list[dict[str, Any]] = []
        for c in ok:
            try:
                value = d._value(c.outputs[tool.output_names[0]])
                results.append({k: float(value[k]) for k in ("rows", "val_loss", "val_accuracy")})
            except Exception as exc:  # withheld by the node's policy, or malformed
                self._warn(r, f"evaluation of {c.node.node} left out: {exc}")
        return pool_evaluations(results)

    def _secure(self, pool: cf.Executor, r: int, ok: list[TaskRun]) -> dict[str, float]:
        """Pool the evaluations without any node's figures reaching the server."""
        from flowfed.engine.fl_tools import roster_tool

        d = self.d
        if len(ok) < 2:
            self._warn(r, "no secure evaluation: fewer than 2 nodes evaluated")
            return {}
        where_of = {c.node.node: (c.node.node, c.node.dataset) for c in ok}
        try:
            keys = [
                d._child(
                    d._node_task(
                        "flowfed.secagg_keys", where_of[c.node.node], r, "eval-keys",
                        ["public_key", "secret"], ["public_key"], {"node": c.node.node, "round": r},
                    ),
                    {},
                )
                for c in ok
            ]  # fmt: skip
            keyed = d._run_batch(pool, r, keys, len(keys), None, "evaluation keys")
            names = [k.node.node for k in keyed]
            roster_spec = build_spec(
                roster_tool, name="flowfed.fl_roster", version="1.0", type="data-transformation"
            )
            roster = d._child(
                self._central_task(roster_spec, r, "eval-roster", {"nodes": names}),
                {"public_keys": [k.outputs["public_key"] for k in keyed]},
            )
            d._execute(roster)
            if roster.state is not State.FINISHED:
                raise StepFailed((roster.error or {}).get("message", "roster failed"))
            by_node = {c.node.node: c for c in ok}
            out_name = _tool(self.s.evaluate_tool).output_names[0]
            masks = [
                d._child(
                    d._node_task(
                        "flowfed.fl_eval_mask", where_of[k.node.node], r, "eval-mask",
                        ["masked"], ["masked"], {"node": k.node.node, "round": r},
                    ),
                    {"evaluation": by_node[k.node.node].outputs[out_name],
                     "secret": k.outputs["secret"], "roster": roster.outputs["output"]},
                )
                for k in keyed
            ]  # fmt: skip
            masked = d._run_batch(pool, r, masks, len(masks), None, "evaluation masking")
            spec = build_spec(
                eval_secure_sum_tool, name="flowfed.fl_eval_secure_sum", version="1.0",
                type="evaluation",
            )  # fmt: skip
            total = d._child(
                self._central_task(spec, r, "eval-sum", {"round": r}),
                {"masked": [m.outputs["masked"] for m in masked]},
            )
            d._execute(total)
            if total.state is not State.FINISHED:
                raise StepFailed((total.error or {}).get("message", "secure sum failed"))
            value = d._value(total.outputs["output"])
            return {k: float(v) for k, v in value.items()}
        except StepFailed as exc:
            self._warn(r, f"no secure evaluation this round: {exc}")
            return {}

    # -- central ----------------------------------------------------------------------------

    def _central(self, r: int, model_ref: ArtifactRef) -> dict[str, float]:
        d = self.d
        assert self.s.evaluate_fn is not None
        tool = _tool(self.s.evaluate_fn)
        child = d._child(central_eval_task(d.node, tool, r), {next(iter(tool.inputs)): model_ref})
        d._execute(child)
        if child.state is not State.FINISHED:
            msg = (child.error or {}).get("message", str(child.state))
            self._warn(r, f"evaluate_fn '{tool.name}' failed: {msg}")
            return {}
        value = d._value(child.outputs[tool.output_names[0]])
        if not isinstance(value, dict):
            self._warn(r, f"evaluate_fn '{tool.name}' returned {type(value).__name__}, not a dict")
            return {}
        out: dict[str, float] = {}
        for k, v in value.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[f"central_{k}"] = float(v)
        return out

    def _central_task(self, spec: Any, r: int, label: str, config: dict[str, Any]) -> Any:
        """A central helper task of round ``r``'s evaluation, its output named for it."""
        from flowfed.plan.federated import round_id
        from flowfed.plan.graph import TaskNode

        node = self.d.node
        art = node.outputs[self.d.fed.model_output]
        return TaskNode(
            id=round_id(node.id, r, label),
            step=node.step,
            tool=spec,
            config=spec.config_model.model_validate(config),
            inputs={},
            outputs={o: f"{art}.{label}" for o in spec.output_names},
            deps=(),
            cache=False,
            round=r,
            variant=node.variant,
        )

    def _warn(self, r: int, message: str) -> None:
        self.d.sink("log", {"level": "warning", "message": f"round {r}: {message}"})


def _tool(name: str) -> Any:
    from flowfed.plan.strategy_rules import find_tool
    from flowfed.tools import get_registry

    spec = find_tool(get_registry(), name)
    if spec is None:  # the planner checked; a tool unregistered since is a bug worth naming
        raise ValueError(f"unknown evaluation tool '{name}'")
    return spec
