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
import json
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.engine.fl_tools import make_aggregator
from flowfed.engine.placed import PlacedHost, StepFailed
from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.engine.task import TaskFailed, attempt, fail
from flowfed.ids import new_id
from flowfed.plan.federated import (
    aggregate_task,
    round_id,
    sample,
    train_task,
    trainer_config,
)
from flowfed.plan.graph import TaskNode
from flowfed.runtime.lifecycle import State
from flowfed.tools.core import Context

if TYPE_CHECKING:
    from flowfed.fl.server import FederatedServer
    from flowfed.tools.core import ToolSpec


class FederatedDriver:
    """Runs one federated step's rounds inside the engine run ``run``."""

    def __init__(self, run: PlacedHost, tr: TaskRun) -> None:
        assert tr.node.federated is not None
        self.run = run
        self.tr = tr
        self.node = tr.node
        self.fed = tr.node.federated
        self.settings = self.fed.settings
        self.sink = run.record.telemetry(tr)
        self.server: FederatedServer  # made when the step starts (drive)
        #: The last round's evaluation metrics, with its round (flowfed.engine.fl_eval).
        self.evaluation: dict[str, float] = {}

    # -- driving ---------------------------------------------------------------------------

    def drive(self) -> None:
        run, tr, fed, s = self.run, self.tr, self.fed, self.settings
        tr.ctx = Context(self.sink, run_id=run.run_id, task_id=tr.id, step=tr.step)
        if not run.record.move(tr, State.STARTED):
            return None
        try:
            from flowfed.fl.server import FederatedServer

            self.server = FederatedServer(
                s, participants=len(fed.participants), per_round=self._per_round()
            )
            aggregator = make_aggregator(self.server)
            from flowfed.engine.fl_eval import Evaluator

            self.evaluator = Evaluator(self)
        except Exception as exc:  # an unknown strategy setting: says which
            fail(run, tr, f"federated step '{tr.step}': {exc}", None)
        if not run.record.move(tr, State.RUNNING):
            return None
        model_ref: ArtifactRef | None = None
        if fed.model_input is not None:
            got = tr.inputs.get(fed.model_input)
            model_ref = got if isinstance(got, ArtifactRef) else None
        self.server.warm_start = model_ref is not None
        rng = np.random.default_rng(s.seed)
        best: float | None = None
        stale = 0
        rounds_done = 0
        stopped = False
        from flowfed.engine.checkpoint import CheckpointError, Checkpoints

        checkpoints = Checkpoints(self)
        try:  # resuming an interrupted run: go on after the newest checkpointed round
            found = checkpoints.latest() if getattr(run, "resume", False) else None
        except CheckpointError as exc:
            fail(run, tr, f"federated step '{tr.step}': {exc}", None)
        if found is not None:
            state, model_ref = found
            kept = checkpoints.restore(state)
            rng.bit_generator.state = kept["rng"]
            best, stale, stopped = kept["best"], int(kept["stale"]), bool(kept["stopped"])
            self.evaluation = dict(kept.get("evaluation") or {})
            rounds_done = int(state["round"])
            self.sink(
                "log",
                {"level": "info", "message": f"resumed after round {rounds_done}'s checkpoint"},
            )
        t0 = time.perf_counter()
        width = min(64, len(fed.participants))
        # Not a `with` block: leaving it would wait for a straggler the round dropped
        # (a hung tool on a simulated node), holding the step back for nothing.
        pool = cf.ThreadPoolExecutor(width, thread_name_prefix="flowfed-fl")
        try:
            for r in range(rounds_done + 1, s.rounds + 1):
                if stopped:
                    break
                if run.cancelled or tr.state.terminal or run.suspended:
                    return None  # suspended: the adopting server runs the step again
                try:
                    chosen = self._sample(r, rng)
                    done: list[tuple[TaskRun, int]] = []
                    if not chosen:  # a Poisson round too small to run (fl_sampling)
                        pass
                    elif s.secure_aggregation:
                        done, model_ref = self._secure_round(pool, r, chosen, model_ref)
                    else:
                        done = self._train_round(pool, r, chosen, model_ref)
                        model_ref = self._aggregate(aggregator, r, done, model_ref)
                except StepFailed as exc:
                    fail(run, tr, str(exc), None)
                rounds_done = r
                metrics = self._round_metrics(r, done)
                evaluation = self.evaluator.evaluate(pool, r, model_ref)
                if evaluation:
                    metrics.update(evaluation)
                    self.evaluation = {"round": r, **evaluation}
                for name, value in metrics.items():
                    self.sink("metric", {"name": name, "value": value, "step": r})
                if self.server.epsilon is not None:
                    eps = self.server.epsilon
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
                        stopped = stale >= stop.patience
                if model_ref is not None:  # None: every round so far skipped (Poisson)
                    checkpoints.save(
                        r,
                        model_ref,
                        {
                            "rng": rng.bit_generator.state,
                            "best": best,
                            "stale": stale,
                            "stopped": stopped,
                            "evaluation": self.evaluation,
                        },
                    )
                if stopped:
                    assert stop is not None
                    self.sink(
                        "log",
                        {
                            "level": "info",
                            "message": f"early stopping after round {r}: "
                            f"{stop.metric} did not improve for {stale} rounds",
                        },
                    )
                    break
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        took = time.perf_counter() - t0
        self.sink("metric", {"name": "rounds", "value": float(rounds_done), "step": None})
        tr.fl_summary = self.server.summary()
        if self.evaluation:
            tr.fl_summary["evaluation"] = dict(self.evaluation)
        self.sink(
            "metric",
            {"name": "seconds_per_round", "value": took / max(1, rounds_done), "step": None},
        )
        if model_ref is None:
            fail(
                run,
                tr,
                f"federated step '{tr.step}': no round ran (Poisson sampling drew too few "
                "participants every round): raise fraction_fit or rounds",
                None,
            )
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
        run.record.finish(tr, [], [], None, reused={fed.model_output: model_ref.id})
        return None

    def _sample(self, r: int, rng: np.random.Generator) -> list[tuple[str, str | None]]:
        """Round ``r``'s participants, leaving out nodes the dispatcher reports offline.

        StepFailed when fewer than ``min_nodes`` participants remain: no round waits for
        a node known to be gone. A node that comes back is sampled again.
        """
        fed, s = self.fed, self.settings
        offline_nodes = getattr(self.run.dispatcher, "offline_nodes", None)
        gone = offline_nodes(s.node_liveness) if offline_nodes is not None else {}
        alive = [p for p in fed.participants if p[0] not in gone]
        if s.sampling == "poisson":
            from flowfed.engine.fl_sampling import poisson_round

            return poisson_round(self, r, alive, gone, rng)
        if len(alive) == len(fed.participants):
            return sample(fed.participants, self._per_round(), rng)
        out = sorted({p[0] for p in fed.participants if p[0] in gone})
        why = ", ".join(
            f"node '{n}' offline since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(gone[n]))}"
            for n in out
        )
        need = min(s.min_nodes or len(fed.participants), len(fed.participants))
        if len(alive) < need:
            raise StepFailed(
                f"federated step '{self.tr.step}', round {r}: {len(alive)} of "
                f"{len(fed.participants)} participants online, fewer than min_nodes={need} "
                f"({why})"
            )
        self.sink("log", {"level": "warning", "message": f"round {r}: leaving out {why}"})
        return sample(alive, min(self._per_round(), len(alive)), rng)

    def _round_metrics(self, r: int, done: list[tuple[TaskRun, int]]) -> dict[str, float]:
        """The round's metrics from its trainers' (the strategy's aggregate_metrics)."""
        results = [(c.node.node, n, dict(c.metrics)) for c, n in done]
        return self.server.round_metrics(r, results)

    def _per_round(self) -> int:
        n = len(self.fed.participants)
        want = math.ceil(self.settings.fraction_fit * n)
        return min(n, max(want, self.settings.min_nodes or 1))

    # -- one round ---------------------------------------------------------------------------

    def _child(self, plan: Any, inputs: dict[str, Any]) -> TaskRun:
        run = self.run
        child = TaskRun(new_id(), plan)
        child.inputs = inputs
        return run.record.add_task(child)

    def _execute(self, child: TaskRun) -> TaskRun:
        try:
            attempt(self.run, child)
        except TaskFailed:
            pass
        except Exception as exc:  # never let one node's surprise take down the round
            if not child.state.terminal:
                child.error = {"message": f"internal error: {exc}", "type": type(exc).__name__}
                self.run.record.move(child, State.ERROR, child.error["message"])
        return child

    def _train_round(
        self,
        pool: cf.Executor,
        r: int,
        chosen: list[tuple[str, str | None]],
        model_ref: ArtifactRef | None,
    ) -> list[tuple[TaskRun, int]]:
        s = self.settings
        children = self._train_children(r, chosen, model_ref)
        deadline = None if s.round_timeout is None else time.monotonic() + s.round_timeout
        need = min(s.min_nodes or len(children), len(children))
        ok = self._run_batch(pool, r, children, need, deadline, "training")
        return [(c, int(c.metrics.get("examples", 0)) or 1) for c in ok]

    def _train_children(
        self, r: int, chosen: list[tuple[str, str | None]], model_ref: ArtifactRef | None
    ) -> list[TaskRun]:
        """Round ``r``'s training tasks (not yet started), one per chosen participant."""
        fed, tr = self.fed, self.tr
        index = {p: i for i, p in enumerate(fed.participants)}
        children: list[TaskRun] = []
        names = [f"{n}:{d}" if d else n for n, d in chosen]
        overrides = self.server.strategy.configure_fit(r, names)
        # One validated config per distinct override: a round of 1,000 participants
        # otherwise holds 1,000 equal copies for the rest of the run.
        configs: dict[str, Any] = {}
        for where, who in zip(chosen, names, strict=True):
            change = overrides.get(who)
            key = json.dumps(change, sort_keys=True, default=repr)
            if key not in configs:
                configs[key] = trainer_config(self.node, change)
            plan = train_task(self.node, where, r, change, configs[key])
            inputs: dict[str, Any] = {}
            for param, ref in tr.inputs.items():
                if param == self.settings.validation:
                    continue  # the evaluation's rows, never the trainer's
                if param in fed.local_inputs:
                    assert isinstance(ref, list)
                    inputs[param] = ref[index[where]]
                elif param != fed.model_input:
                    inputs[param] = ref
            if model_ref is not None and fed.model_input is not None:
                inputs[fed.model_input] = model_ref
            children.append(self._child(plan, inputs))
        return children

    def _run_batch(
        self,
        pool: cf.Executor,
        r: int,
        children: list[TaskRun],
        need: int,
        deadline: float | None,
        phase: str,
    ) -> list[TaskRun]:
        """Run ``children`` at once; past ``deadline`` drop the late ones once ``need`` are in.

        Returns the finished children; fewer than ``need`` raises :class:`StepFailed`.
        """
        s = self.settings
        inline = getattr(self.run.dispatcher, "in_process", False) and len(children) <= 8
        if deadline is None and inline:
            # Simulated nodes compute in this process and never wait on I/O: handing a few
            # tasks to threads only adds switches for the GIL (with many, numpy's released
            # GIL lets threads overlap; measured in benchmarks/fl).
            for c in children:
                self._execute(c)
            return self._outcome(r, children, need, phase)
        futures = {pool.submit(self._execute, c): c for c in children}
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
            if self.run.cancelled:
                break
        for f in pending:  # stragglers: cancel and record why their result was dropped
            c = futures[f]
            handle = getattr(c, "ctx", None)
            if handle is not None:
                handle.cancel()
            why = f"dropped: no {phase} result within round_timeout ({s.round_timeout:g}s)"
            self.run.record.move(c, State.CANCELLED, why)
            self.sink(
                "log",
                {
                    "level": "warning",
                    "message": f"round {r}: dropped the late {phase} of {c.node.node}",
                },
            )
        return self._outcome(r, finished, need, phase)

    def _outcome(self, r: int, finished: list[TaskRun], need: int, phase: str) -> list[TaskRun]:
        """The finished children of a batch; fewer than ``need`` raises StepFailed."""
        tr = self.tr
        ok = [c for c in finished if c.state is State.FINISHED]
        failed = [c for c in finished if c.state is State.ERROR]
        for c in failed:
            msg = (c.error or {}).get("message", "failed")
            self.sink(
                "log",
                {
                    "level": "warning",
                    "message": f"round {r}: {c.node.node} dropped out ({phase}): {msg}",
                },
            )
        if len(ok) < need:
            why = "; ".join(
                f"{c.node.node}: {(c.error or {}).get('message', 'no result')}" for c in failed
            )
            raise StepFailed(
                f"federated step '{tr.step}', round {r}, {phase}: {len(ok)} result(s), fewer "
                f"than min_nodes={need}" + (f" ({why})" if why else "")
            )
        return ok

    def _node_task(
        self,
        tool: str,
        where: tuple[str, str | None],
        r: int,
        label: str,
        outputs: list[str],
        shareable: list[str],
        config: dict[str, Any],
    ) -> TaskNode:
        """A helper task of a secure round (keys, mask, reveal) placed on ``where``."""
        from flowfed.tools import get_registry

        spec = get_registry().find(tool)
        if spec is None:  # the built-in library is imported with the engine's flows
            import flowfed.tools.library  # noqa: F401

            spec = get_registry().find(tool)
        assert spec is not None
        node, dataset = where
        who = f"{node}:{dataset}" if dataset else node
        art = self.node.outputs[self.fed.model_output]
        return TaskNode(
            id=round_id(self.node.id, r, f"{label}/{who}"),
            step=self.node.step,
            tool=spec,
            config=spec.config_model.model_validate(config),
            inputs={},
            outputs={o: f"{art}.{o}[{who}]" for o in outputs},
            deps=(),
            timeout=self.node.timeout,
            cache=False,
            node=node,
            round=r,
            dataset=dataset,
            shareable=frozenset(shareable),
        )

    def _central_task(self, spec: ToolSpec, r: int, label: str, config: dict[str, Any]) -> TaskNode:
        art = self.node.outputs[self.fed.model_output]
        return TaskNode(
            id=round_id(self.node.id, r, label),
            step=self.node.step,
            tool=spec,
            config=spec.config_model.model_validate(config),
            inputs={},
            outputs={o: (art if o == "output" else f"{art}.{label}") for o in spec.output_names},
            deps=(),
            cache=False,
            round=r,
            variant=self.node.variant,
        )

    def _value(self, ref: ArtifactRef) -> Any:
        if ref.has_value:
            return ref.value
        return ref.handle(self.run.source(ref)).load()

    def _secure_round(
        self,
        pool: cf.Executor,
        r: int,
        chosen: list[tuple[str, str | None]],
        model_ref: ArtifactRef | None,
    ) -> tuple[list[tuple[TaskRun, int]], ArtifactRef]:
        """One round under secure aggregation: :func:`flowfed.engine.fl_secure.secure_round`."""
        from flowfed.engine.fl_secure import secure_round

        return secure_round(self, pool, r, chosen, model_ref)

    def _template(self, pool: cf.Executor, r: int, trained: TaskRun) -> ArtifactRef:
        """Round 1 without an initial model: one node's zero-weight model template."""
        where = (trained.node.node, trained.node.dataset)
        child = self._child(
            self._node_task(
                "flowfed.fl_template", where, r, "template", ["template"], ["template"], {}
            ),
            {"update": trained.outputs[self.fed.model_output]},
        )
        self._execute(child)
        if child.state is not State.FINISHED:
            msg = (child.error or {}).get("message", "failed")
            raise StepFailed(f"federated step '{self.tr.step}', round {r}: model template: {msg}")
        return child.outputs["template"]

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
            metrics=self._round_metrics(r, done),
        )
        inputs: dict[str, Any] = {"updates": updates}
        if model_ref is not None:
            inputs["global_model"] = model_ref
        child = self._execute(self._child(plan, inputs))
        if child.state is not State.FINISHED:
            msg = (child.error or {}).get("message", str(child.state))
            raise StepFailed(f"federated step '{self.tr.step}', round {r}: aggregation: {msg}")
        forget = getattr(self.run, "forget_bytes", None)
        if forget is not None:  # the updates are aggregated: no task reads them again
            forget([u.hash for u in updates])
        return child.outputs["output"]
