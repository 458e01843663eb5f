"""Resume after a restart: a run left behind by a dead server, rebuilt from the catalog.

Finished tasks stay finished with their artifacts; routing decisions of tasks that ended
are made again from their recorded outcome; the event log goes on where it stopped. A
task that was in flight was interrupted by the platform, not failed by its tool: it ends
in Error ("interrupted") and is resumed (run again) once on the platform's account,
apart from its step's ``retries``; interrupted again, only those retries run it.

Example:
    >>> # engine.run(graph, run_id=run_id, resume=True)   # calls restore() first
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.runtime.lifecycle import Lifecycle, State
from flowfed.spec.models import END

if TYPE_CHECKING:
    from flowfed.db import Database
    from flowfed.engine.scheduler import Scheduler

#: What an interrupted task's Error says (a server running it was killed).
INTERRUPTED = "interrupted: the server running this task stopped"

#: Resumptions the platform owes an interrupted task before its step's retries count.
RESUMES = 1


def restore(run: Scheduler) -> None:
    """Rebuild the scheduler's state of an interrupted run from the database."""
    state = load_state(run.e.db, run.run_id)
    run.record.event_seq = itertools.count(state["max_seq"] + 1)
    by_step: dict[str, list[dict[str, Any]]] = {}
    for row in state["tasks"]:
        by_step.setdefault(row.get("plan_key") or row["step"], []).append(row)
    routed_from: list[TaskRun] = []
    for step, rows in by_step.items():
        node = run.g.tasks.get(step)
        if node is None:
            # A federated step's round tasks (plan keys the graph does not hold) are
            # history: the step's own row decides. Interrupted, the step runs again and
            # goes on after its last checkpointed round (flowfed.engine.checkpoint).
            continue
        restored: list[TaskRun] = []
        for row in rows:
            tr = TaskRun(row["id"], node, iteration=row["iteration"], attempt=row["attempt"])
            # Rebuilt as the catalog left it: where this attempt had got to.
            tr.lifecycle = Lifecycle(state=State(row["state"]))
            tr.resumes = int(row.get("resumes") or 0)
            tr.metrics = dict(row.get("metrics") or {})
            tr.cached = bool(row.get("cached"))
            tr.error = row.get("error")
            tr.cache_key = row.get("cache_key")
            restored.append(tr)
        run.view.tasks.setdefault(node.step, []).extend(restored)
        run.started_ids.add(step)
        run.executions[step] = max(t.iteration for t in restored)
        last, row = restored[-1], rows[-1]
        if last.state in (State.FINISHED, State.CACHED):
            for out_name, art in row["outputs"].items():
                if out_name not in node.outputs:
                    continue
                run.generation += 1
                ref = ArtifactRef.from_row(node.outputs[out_name], art, run.generation)
                last.outputs[out_name] = ref
                run.latest[ref.name] = ref
            routed_from.append(last)
        elif last.state is State.ERROR:
            run.any_failure = True
            routed_from.append(last)
        elif not last.state.terminal:
            interrupted(run, last)
    for step in by_step:
        node = run.g.tasks.get(step)
        if node is not None:
            run.consumed[step] = {
                a: run.latest[a].generation for a in node.input_names() if a in run.latest
            }
    # Routing decisions of tasks that ended before the restart are made again from
    # their recorded outcome and metrics, so routed steps still get their turn.
    for tr in routed_from:
        target = run._route(tr, success=tr.state is not State.ERROR)
        if tr.state is State.ERROR and (target is None or target == END):
            run.unrouted_failures.append(tr.step)
        if target and target != END and target not in by_step:
            run.activations[target] = run.activations.get(target, 0) + 1


def interrupted(run: Scheduler, tr: TaskRun) -> None:
    """A task the dead server was running: record why it stopped, then run it again.

    The interruption is the platform's, not the tool's: the task is resumed once on
    the platform's account, whatever its step's ``retries``. Interrupted again, it
    is retried only as its step's ``retries`` allow.
    """
    report = {
        "message": INTERRUPTED,
        "type": "Interrupted",
        "traceback": None,
        "context": {"step": tr.step, "attempt": tr.attempt},
    }
    tr.error = report
    record = run.record
    record.move(tr, State.ERROR, INTERRUPTED)
    record.end(tr, State.ERROR, error=report, metrics=tr.metrics or None)
    node = tr.node
    if tr.resumes < RESUMES or tr.retries_used < node.retries:
        record.retry(tr, INTERRUPTED, resume=tr.resumes < RESUMES)
        tr.inputs = run._input_refs(node)
        run.active.add(node.id)
        run.resubmit.append(tr)
    else:
        run.any_failure = True
        target = run._route(tr, success=False)
        if target is None or target == END:
            run.unrouted_failures.append(tr.step)
        else:
            run.activations[target] = run.activations.get(target, 0) + 1


def load_state(db: Database, run_id: str) -> dict[str, Any]:
    """What a resumed run needs: its tasks in order (each with ``outputs``: output
    name → artifact dict, and ``resumes``: how often the platform already ran it again
    after an interruption) and the last event sequence number recorded."""
    from sqlalchemy import func, select

    from flowfed.db import models as m

    t, ra, e, tt = m.tasks, m.run_artifacts, m.events, m.transitions
    with db.engine.connect() as conn:
        tasks = _rows(conn.execute(select(t).where(t.c.run_id == run_id).order_by(t.c.created_at)))
        links = conn.execute(
            select(ra.c.task_id, ra.c.output, ra.c.artifact_id).where(ra.c.run_id == run_id)
        ).all()
        arts = db.artifact_dicts(conn, [aid for _, _, aid in links])
        max_seq = conn.execute(
            select(func.max(e.c.seq)).where(e.c.run_id == run_id)
        ).scalar_one_or_none()
        # The engine records a resumption as Error → Pending with detail "resumed: …".
        resumes: dict[str, int] = dict(
            conn.execute(
                select(tt.c.task_id, func.count())
                .where(
                    tt.c.run_id == run_id,
                    tt.c.dst == "pending",
                    tt.c.detail.like("resumed:%"),
                )
                .group_by(tt.c.task_id)
            ).all()
        )
    outputs: dict[str, dict[str, dict[str, Any]]] = {}
    for task_id, output, aid in links:
        if output is not None and aid in arts:
            outputs.setdefault(task_id, {})[output] = arts[aid]
    for task in tasks:
        task["outputs"] = outputs.get(task["id"], {})
        task["resumes"] = int(resumes.get(task["id"], 0))
    return {"tasks": tasks, "max_seq": int(max_seq or 0)}


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]
