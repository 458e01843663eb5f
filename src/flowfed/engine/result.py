"""What a run reports: :class:`RunResult`, built when the run closes (:func:`close`), with
the summary of its federated rounds and its ``report`` artifact.

Example:
    >>> # result = flowfed.run_flow("flow.yaml"); result.status, result.value("scores")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowfed.artifacts import is_inline
from flowfed.engine.state import ArtifactRef, RunView, TaskRun
from flowfed.ids import new_id
from flowfed.plan.labels import task_label
from flowfed.runtime.lifecycle import State

if TYPE_CHECKING:
    from flowfed.artifacts import ByteSource
    from flowfed.engine.scheduler import Scheduler
    from flowfed.plan.graph import TaskGraph


@dataclass
class RunResult:
    """What a finished run reports (the CLI's ``--json`` is built from this).

    Example:
        >>> # result = flowfed.run_flow("flow.yaml")
        >>> # result.status, result.value("scores")
        >>> # ('success', {'accuracy': 0.87, 'auc': 0.96})
    """

    run_id: str
    status: str
    view: RunView
    error: str | None = None
    #: Federated rounds and the flow's ``report`` artifact (see :func:`summarize`).
    summary: dict[str, Any] = field(default_factory=dict)
    #: The latest reference of every artifact this run produced or reused, by name.
    outputs: dict[str, ArtifactRef] = field(default_factory=dict, repr=False)
    _artifacts: list[dict[str, Any]] | None = field(default=None, repr=False)
    _catalog: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)
    _source: Callable[[ArtifactRef], ByteSource] | None = field(default=None, repr=False)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The catalog rows of the run's artifacts (read from the database on first use:
        a caller that only wants the status or a value never pays for the query)."""
        if self._artifacts is None:
            self._artifacts = self._catalog() if self._catalog is not None else []
        return self._artifacts

    def value(self, name: str) -> Any:
        """The value of artifact ``name`` as this run left it (its latest version).

        Values the run computed in this process are returned as they are; cached or
        placed ones are loaded from the catalog or the artifact store.

        Example:
            >>> # flowfed.run_flow("flow.yaml").value("model").coef_.shape
            >>> # (1, 30)
        """
        ref = self.outputs.get(name)
        if ref is None:
            known = ", ".join(sorted(self.outputs)) or "none"
            raise KeyError(f"run {self.run_id} has no artifact named {name!r} (it has: {known})")
        if ref.has_value:
            return ref.value
        if self._source is None:
            raise LookupError(f"artifact {name!r} of run {self.run_id} has no stored bytes here")
        return ref.handle(self._source(ref)).load()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``flowfed run --json``."""
        steps = []
        for name in self.view.steps:
            tasks = self.view.tasks.get(name, [])
            steps.append(
                {
                    "name": name,
                    **({"type": self.view.types[name]} if name in self.view.types else {}),
                    "status": self.view.step_state(name),
                    "tasks": [
                        {
                            "id": t.id,
                            "label": task_label(t.node),
                            "status": str(t.state),
                            "node": t.node.node,
                            **({"dataset": t.node.dataset} if t.node.dataset else {}),
                            **({"round": t.node.round} if t.node.round is not None else {}),
                            "cached": t.cached,
                            "attempt": t.attempt,
                            "iteration": t.iteration,
                            **({"error": t.error} if t.error else {}),
                            **({"metrics": t.metrics} if t.metrics else {}),
                            **({"resources": t.resources} if t.resources else {}),
                        }
                        for t in tasks
                    ],
                }
            )
        return {
            "run_id": self.run_id,
            "flow": self.view.flow_name,
            "status": self.status,
            "error": self.error,
            "duration_s": round((self.view.ended_at or time.time()) - self.view.started_at, 4),
            "steps": steps,
            "artifacts": [
                {"name": a["name"], "version": a["version"], "hash": a["hash"], "id": a["id"]}
                for a in self.artifacts
            ],
            **({"summary": self.summary} if self.summary else {}),
        }


def summarize(
    view: RunView,
    graph: TaskGraph,
    latest: dict[str, ArtifactRef],
    source: Callable[[ArtifactRef], ByteSource],
) -> dict[str, Any]:
    """Rounds and timing of federated steps, and the value of the flow's ``report``."""
    out: dict[str, Any] = {}
    for runs in view.tasks.values():
        for t in runs:
            if t.node.federated is not None and t.state is State.FINISHED:
                out["rounds"] = int(t.metrics.get("rounds", 0))
                out["seconds_per_round"] = t.metrics.get("seconds_per_round")
                out.update(t.fl_summary or {})
                ref = t.outputs.get(t.node.federated.model_output)
                if ref is not None:
                    out["model"] = {"name": ref.name, "id": ref.id, "hash": ref.hash}
    report = graph.flow.report
    if not report:
        return out
    # A swept flow has one report per subvariant: report[learning_rate=0.1], ...
    found = {
        name[len(report) + 1 : -1] if name != report else "": ref
        for name, ref in latest.items()
        if name == report or (name.startswith(report + "[") and name.endswith("]"))
    }
    values: dict[str, Any] = {}
    for label, ref in found.items():
        try:
            values[label] = ref.value if ref.has_value else ref.handle(source(ref)).load()
        except Exception as exc:  # the run's result stands; say why the report is absent
            values[label] = {"error": f"cannot load report '{ref.name}': {exc}"}
    if "" in values:
        out["metrics"] = values[""]
    elif values:
        out["variants"] = values
    return out


def _failed_last(run: Scheduler) -> list[str]:
    """Under ``failure_policy: any``, the steps whose last task failed: a step a loop ran
    again until it succeeded (seed 003's retry and poll loops) did not fail."""
    if run.g.flow.failure_policy != "any" or not run.any_failure:
        return []
    return [n for n, runs in run.view.tasks.items() if runs[-1].state is State.ERROR]


def close(run: Scheduler) -> RunResult:
    """End a run: a terminal task for every step that never ran (saying why), every
    write committed, the run's status decided and recorded, and its result built."""
    cancelled = run.cancelled
    record = run.record
    # Steps that never ran get a terminal task so the record says why.
    for name, node in run.g.tasks.items():
        if name in run.started_ids:
            continue
        tr = record.add_task(TaskRun(new_id(), node))
        if cancelled:
            reason = "run cancelled"
            dst = State.CANCELLED
        else:
            dst = State.SKIPPED
            missing = [a for a in node.input_names() if a not in run.latest]
            if run.fatal:
                reason = "run stopped"
            elif missing:
                prod = run.g.producers.get(missing[0], "?")
                reason = f"input '{missing[0]}' was never produced (step '{prod}' did not finish)"
            else:
                reason = "no condition routed to it"
        tr.message = reason
        record.move(tr, dst, reason)
        record.end(tr, dst)
    run.persister.close()
    if run.persister.errors and not run.fatal:
        run.fatal = "; ".join(run.persister.errors)
    if cancelled:
        status, error = "cancelled", "run cancelled"
    elif run.fatal:
        status, error = "failed", run.fatal
    elif run.unrouted_failures or (failed_last := _failed_last(run)):
        status = "failed"
        failed = run.unrouted_failures or failed_last
        error = "step(s) failed: " + ", ".join(dict.fromkeys(failed))
    else:
        status, error = "success", None
    run.view.status = status
    run.view.error = error
    run.view.ended_at = time.time()
    record.emit("run", None, {"status": status, "error": error})
    run.writer.finish_run(run_id=run.run_id, status=status, ended_at=run.view.ended_at, error=error)
    run.writer.close()
    db, run_id = run.e.db, run.run_id
    blobs, store = run.blobs, run.store
    result = RunResult(
        run_id,
        status,
        run.view,
        error,
        summarize(run.view, run.g, run.latest, run.source),
        outputs=dict(run.latest),
        _catalog=lambda: db.run_artifacts(run_id),
        # Not run.source: the result must not keep this run's kept bytes alive.
        _source=lambda ref: blobs if is_inline(ref.uri) else store,
    )
    from sqlalchemy.pool import StaticPool

    if isinstance(db.engine.pool, StaticPool):
        # An in-memory database (one shared connection) is gone once closed: read the
        # catalog while it exists.
        result.artifacts  # noqa: B018
    return result
