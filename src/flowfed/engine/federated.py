"""Running a federated step: rounds of local training on the nodes, aggregation centrally.

A ``kind: federated`` step is one task of the plan. When it becomes ready, the engine
hands it to :class:`FederatedDriver`, which runs its rounds as tasks of their own (the
seed-000 Task_2A/2B/2C):

* round ``r`` samples participants (``fraction_fit``, at least ``min_nodes``), places one
  training task on each (the step's tool, warm-started from round ``r-1``'s global model,
  ``local_epochs`` epochs) and waits for their updates. With ``round_timeout`` it waits
  that long, then drops late updates and goes on once ``min_nodes`` answered; failed
  participants are dropped the same way. Fewer than ``min_nodes`` updates fail the step.
* one aggregation task on the central engine combines the updates with the step's
  strategy (``flowfed.fl``), optionally with client-level differential privacy, into
  round ``r``'s global model. Every update and global model is an artifact with
  lineage: global(r) ← updates(r) ← global(r-1) and the node's own data artifact.
* ``early_stopping`` ends the rounds when the weighted mean of a metric the trainers
  report stops improving.

The step's own task finishes with the final global model as its output, so downstream
steps consume it like any other artifact. The per-round task plans come from the pure
:mod:`flowfed.plan.federated`.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.plan.federated import aggregate_task, round_metric, sample, train_task
from flowfed.runtime.lifecycle import State
from flowfed.tools.core import Context, Model, build_spec

if TYPE_CHECKING:
    from flowfed.engine.local import _Run
    from flowfed.tools.core import ToolSpec


class StepFailed(Exception):
    """The federated step cannot go on (too few updates, a failed aggregation)."""


def _num_examples(model: Any) -> int:
    n = getattr(model, "num_examples", None)
    if n is None:
        n = (getattr(model, "training", None) or {}).get("rows")
    if not isinstance(n, int | float) or n <= 0:
        raise ValueError(
            f"a federated trainer's model must say how many examples it saw "
            f"(model.training['rows'] or model.num_examples); {type(model).__name__} does not"
        )
    return int(n)


def _weights_of(model: Any) -> list[np.ndarray]:
    get = getattr(model, "get_weights", None)
    if get is None or not hasattr(model, "with_weights"):
        raise ValueError(
            f"{type(model).__name__} cannot take part in federated training: it needs "
            "get_weights() and with_weights(weights) (see docs/federated.md)"
        )
    return [np.asarray(w, dtype=np.float64) for w in get()]


def make_aggregator(driver: FederatedDriver) -> ToolSpec:
    """The central aggregation tool of one federated step (holds the strategy's state)."""
    from flowfed.fl import Update, make_strategy, private_mean_update

    settings = driver.settings
    strategy = make_strategy(settings.strategy, **settings.strategy_config)
    rng = np.random.default_rng(settings.seed)

    def aggregate(
        updates: list[Model],
        ctx: Context,
        global_model: Model | None = None,
        *,
        round: int = 1,
        strategy_name: str = "fedavg",
        nodes: list[str] | None = None,
    ) -> Model:
        """Combine one round's updates into the next global model."""
        names = nodes or [f"node-{i}" for i in range(len(updates))]
        ups = [
            Update(name, _weights_of(m), _num_examples(m))
            for name, m in zip(names, updates, strict=True)
        ]
        base = updates[0] if global_model is None else global_model
        current = _weights_of(global_model) if global_model is not None else None
        if current is None:
            # Round 1 without an initial model: the trainers started from zeros, and the
            # server optimizers and DP-FedAvg measure each change from that start.
            current = [np.zeros_like(w) for w in ups[0].weights]
        privacy = settings.privacy
        if privacy is not None:
            new = private_mean_update(
                current, ups, privacy.clip_norm, privacy.noise_multiplier, rng
            )
        else:
            new = strategy.aggregate(ups, global_weights=current)
        total = sum(u.num_examples for u in ups)
        ctx.log(
            f"round {round}: {strategy_name} over {len(ups)} update(s) "
            f"({', '.join(u.node for u in ups)}), {total} examples"
        )
        model = base.with_weights(new)  # type: ignore[attr-defined]
        training = dict(getattr(model, "training", {}) or {})
        training.update(
            {"federated_round": round, "strategy": strategy_name, "rows": total, "nodes": names}
        )
        if hasattr(model, "training"):
            model.training = training
        return model

    return build_spec(aggregate, name="flowfed.fl_aggregate", version="1.0", type="analysis")


class FederatedDriver:
    """Runs one federated step's rounds inside the engine run ``run``."""

    def __init__(self, run: _Run, tr: TaskRun) -> None:
        assert tr.node.federated is not None
        self.run = run
        self.tr = tr
        self.node = tr.node
        self.fed = tr.node.federated
        self.settings = self.fed.settings
        self.sink = run._telemetry(tr)

    # -- driving ---------------------------------------------------------------------------

    def drive(self) -> None:
        run, tr, fed, s = self.run, self.tr, self.fed, self.settings
        tr.ctx = Context(self.sink, run_id=run.run_id, task_id=tr.id, step=tr.step)  # type: ignore[attr-defined]
        if not run._move(tr, State.STARTED):
            return None
        try:
            aggregator = make_aggregator(self)
        except Exception as exc:  # an unknown strategy setting: says which
            run._fail(tr, f"federated step '{tr.step}': {exc}", None)
        if not run._move(tr, State.RUNNING):
            return None
        model_ref: ArtifactRef | None = None
        if fed.model_input is not None:
            got = tr.inputs.get(fed.model_input)
            model_ref = got if isinstance(got, ArtifactRef) else None
        accountant = None
        if s.privacy is not None and s.privacy.noise_multiplier > 0:
            from flowfed.fl import PrivacyAccountant

            accountant = PrivacyAccountant(
                s.privacy.noise_multiplier,
                sample_rate=min(1.0, self._per_round() / len(fed.participants)),
                delta=s.privacy.delta,
            )
        rng = np.random.default_rng(s.seed)
        best: float | None = None
        stale = 0
        rounds_done = 0
        t0 = time.perf_counter()
        width = min(64, len(fed.participants))
        with cf.ThreadPoolExecutor(width, thread_name_prefix="flowfed-fl") as pool:
            for r in range(1, s.rounds + 1):
                if run.e._cancel.is_set() or tr.state.terminal:
                    return None
                chosen = sample(fed.participants, self._per_round(), rng)
                try:
                    done = self._train_round(pool, r, chosen, model_ref)
                    model_ref = self._aggregate(aggregator, r, done, model_ref)
                except StepFailed as exc:
                    run._fail(tr, str(exc), None)
                rounds_done = r
                metrics = round_metric([(c.metrics, n) for c, n in done])
                for name, value in metrics.items():
                    self.sink("metric", {"name": name, "value": value, "step": r})
                if accountant is not None:
                    eps = accountant.step()
                    self.sink("metric", {"name": "dp_epsilon", "value": eps, "step": r})
                loss = metrics.get("loss")
                self.sink(
                    "progress",
                    {
                        "fraction": r / s.rounds,
                        "message": f"Round {r}/{s.rounds}"
                        + (f", loss {loss:.4g}" if loss is not None else ""),
                    },
                )
                stop = s.early_stopping
                if stop is not None and stop.metric in metrics:
                    value = metrics[stop.metric]
                    better = (
                        best is None
                        or (stop.mode == "min" and value < best - stop.min_delta)
                        or (stop.mode == "max" and value > best + stop.min_delta)
                    )
                    if better:
                        best, stale = value, 0
                    else:
                        stale += 1
                        if stale >= stop.patience:
                            self.sink(
                                "log",
                                {
                                    "level": "info",
                                    "message": f"early stopping after round {r}: "
                                    f"{stop.metric} did not improve for {stale} rounds",
                                },
                            )
                            break
        took = time.perf_counter() - t0
        self.sink("metric", {"name": "rounds", "value": float(rounds_done), "step": None})
        self.sink(
            "metric",
            {"name": "seconds_per_round", "value": took / max(1, rounds_done), "step": None},
        )
        assert model_ref is not None
        tr.outputs[fed.model_output] = ArtifactRef(
            model_ref.id,
            self.node.outputs[fed.model_output],
            model_ref.hash,
            model_ref.size,
            model_ref.kind,
            model_ref.type_name,
            model_ref.uri,
            version=model_ref.version,
            meta=model_ref.meta,
            value=model_ref.value,
            has_value=model_ref.has_value,
        )
        tr.progress = 1.0
        if run._move(tr, State.FINISHED):
            run.writer.finish_task(
                task_id=tr.id,
                run_id=run.run_id,
                state="finished",
                at=time.time(),
                artifacts=[],
                cache_key=None,
                cached=False,
                error=None,
                metrics=tr.metrics or None,
                progress=1.0,
                reused={fed.model_output: model_ref.id},
            )
        return None

    def _per_round(self) -> int:
        n = len(self.fed.participants)
        want = math.ceil(self.settings.fraction_fit * n)
        return min(n, max(want, self.settings.min_nodes or 1))

    # -- one round ---------------------------------------------------------------------------

    def _child(self, plan: Any, inputs: dict[str, Any]) -> TaskRun:
        run = self.run
        child = TaskRun(uuid.uuid4().hex, plan)
        child.inputs = inputs
        run.view.tasks.setdefault(plan.step, []).append(child)
        run.writer.add_tasks([run._task_row(child)])
        return child

    def _execute(self, child: TaskRun) -> TaskRun:
        from flowfed.engine.local import TaskFailed

        try:
            self.run._attempt(child)
        except TaskFailed:
            pass
        except Exception as exc:  # never let one node's surprise take down the round
            if not child.state.terminal:
                child.error = {"message": f"internal error: {exc}", "type": type(exc).__name__}
                self.run._move(child, State.ERROR, child.error["message"])
        return child

    def _train_round(
        self,
        pool: cf.Executor,
        r: int,
        chosen: list[tuple[str, str | None]],
        model_ref: ArtifactRef | None,
    ) -> list[tuple[TaskRun, int]]:
        fed, s, tr = self.fed, self.settings, self.tr
        index = {p: i for i, p in enumerate(fed.participants)}
        children: list[TaskRun] = []
        for where in chosen:
            plan = train_task(self.node, where, r)
            inputs: dict[str, Any] = {}
            for param, ref in tr.inputs.items():
                if param in fed.local_inputs:
                    assert isinstance(ref, list)
                    inputs[param] = ref[index[where]]
                elif param != fed.model_input:
                    inputs[param] = ref
            if model_ref is not None and fed.model_input is not None:
                inputs[fed.model_input] = model_ref
            children.append(self._child(plan, inputs))
        futures = {pool.submit(self._execute, c): c for c in children}
        need = min(s.min_nodes or len(children), len(children))
        deadline = None if s.round_timeout is None else time.monotonic() + s.round_timeout
        pending = set(futures)
        finished: list[TaskRun] = []
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            finished.extend(f.result() for f in done)
            ok = [c for c in finished if c.state is State.FINISHED]
            late = deadline is not None and time.monotonic() >= deadline
            if late and len(ok) >= need:
                break
            if self.run.e._cancel.is_set():
                break
        for f in pending:  # stragglers: cancel and record why their update was dropped
            c = futures[f]
            handle = getattr(c, "ctx", None)
            if handle is not None:
                handle.cancel()
            why = f"dropped: no update within round_timeout ({s.round_timeout:g}s)"
            self.run._move(c, State.CANCELLED, why)
            self.sink(
                "log",
                {
                    "level": "warning",
                    "message": f"round {r}: dropped the late update of {c.node.node}",
                },
            )
        ok = [c for c in finished if c.state is State.FINISHED]
        failed = [c for c in finished if c.state is State.ERROR]
        for c in failed:
            msg = (c.error or {}).get("message", "failed")
            self.sink(
                "log",
                {"level": "warning", "message": f"round {r}: {c.node.node} dropped out: {msg}"},
            )
        if len(ok) < need:
            why = "; ".join(
                f"{c.node.node}: {(c.error or {}).get('message', 'no update')}" for c in failed
            )
            raise StepFailed(
                f"federated step '{tr.step}', round {r}: {len(ok)} update(s), fewer than "
                f"min_nodes={need}" + (f" ({why})" if why else "")
            )
        return [(c, int(c.metrics.get("examples", 0)) or 1) for c in ok]

    def _aggregate(
        self,
        aggregator: ToolSpec,
        r: int,
        done: list[tuple[TaskRun, int]],
        model_ref: ArtifactRef | None,
    ) -> ArtifactRef:
        out = self.fed.model_output
        updates = [c.outputs[out] for c, _ in done]
        plan = aggregate_task(
            self.node,
            aggregator,
            r,
            nodes=[c.node.node for c, _ in done],
            has_global=model_ref is not None,
        )
        inputs: dict[str, Any] = {"updates": updates}
        if model_ref is not None:
            inputs["global_model"] = model_ref
        child = self._execute(self._child(plan, inputs))
        if child.state is not State.FINISHED:
            msg = (child.error or {}).get("message", str(child.state))
            raise StepFailed(f"federated step '{self.tr.step}', round {r}: aggregation: {msg}")
        return child.outputs["output"]
