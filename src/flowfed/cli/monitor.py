"""The terminal monitor: seed 000's tree of steps and tasks, drawn from a RunView.

It reads the engine's in-memory view on its own clock (a few frames a second) and never
sits in the engine's hot path. Every state is shown by a word and a symbol, not colour
alone.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from flowfed.cli.figures import duration_text, resources_text
from flowfed.engine.state import RunView, TaskRun
from flowfed.plan.graph import TaskNode
from flowfed.plan.labels import task_label
from flowfed.runtime.lifecycle import State
from flowfed.runtime.usage import stall_after_s

_TASK_STYLE: dict[State, tuple[str, str]] = {
    State.PENDING: ("○", "dim"),
    State.INITIALIZED: ("◔", "cyan"),
    State.STARTED: ("◑", "cyan"),
    State.RUNNING: ("◕", "yellow"),
    State.FINISHED: ("✓", "green"),
    State.CACHED: ("↺", "blue"),
    State.ERROR: ("✗", "red"),
    State.SKIPPED: ("-", "dim"),
    State.CANCELLED: ("⊘", "magenta"),
}
_STEP_STYLE = {
    "pending": ("○", "dim"),
    "running": ("◕", "yellow"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("-", "dim"),
    "cancelled": ("⊘", "magenta"),
}
_RUN_STYLE = {"running": "yellow", "success": "green", "failed": "red", "cancelled": "magenta"}


def _bar(fraction: float, width: int = 12) -> str:
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def task_line(t: TaskRun, rounds: int | None = None) -> Text:
    """One task: symbol, tool, node, state word, round/iteration, progress, metrics.

    A federated round task reads like seed 000: ``(hospital-a) running · Round 17/30 ·
    loss 0.21``.
    """
    sym, style = _TASK_STYLE.get(t.state, ("?", ""))
    line = Text()
    line.append(f"{sym} ", style=style)
    # Seed 000 names a task in words: "Local model training (hospital-a)".
    label = getattr(t.node, "label", None)
    if not label and isinstance(t.node, TaskNode):
        label = task_label(t.node)
    if label:
        words, _, where = label.rpartition(" (")
        line.append(words or label)
        if words:
            line.append(f" ({where}", style="dim")
    else:
        line.append(t.node.tool.name)
        line.append(f" ({t.node.node})", style="dim")
    if t.node.variant:
        line.append(" [" + ", ".join(f"{k}={v}" for k, v in t.node.variant.items()) + "]")
    word = "cached" if t.cached else str(t.state)
    line.append(f" {word}", style=style)
    if t.node.round is not None and t.state is State.RUNNING and t.node.id.endswith("/aggregate"):
        line.append(f" · aggregating round {t.node.round}")
    elif t.node.round is not None:
        line.append(f" · Round {t.node.round}" + (f"/{rounds}" if rounds else ""))
    if t.iteration > 1:
        line.append(f" · iteration {t.iteration}")
    if t.attempt > 1:
        line.append(f" · attempt {t.attempt}/{t.node.retries + 1}")
    if t.progress is not None and not t.state.terminal:
        line.append(f" · {t.progress * 100:.0f}%")
    # Seed 000's "resource usage per task": cpu 1.2 s · 85 MB · 5,000/5,000 images
    used = resources_text(getattr(t, "resources", None))
    if used:
        line.append(f" · {used}", style="cyan")
    if t.message and t.state is not State.ERROR:
        line.append(f" · {t.message}", style="dim")
    if t.metrics:
        shown = list(t.metrics.items())[-3:]
        line.append(" · " + ", ".join(f"{k} {v:.4g}" for k, v in shown))
    if t.error:
        line.append(f" · {t.error.get('message', '')}"[:200], style="red")
    return line


def render(view: RunView, max_tasks_per_step: int = 20) -> Tree:
    """The whole tree for one frame."""
    elapsed = (view.ended_at or time.time()) - view.started_at
    title = Text()
    title.append(view.flow_name, style="bold")
    if view.flow_type:
        title.append(f" ({view.flow_type})", style="dim")
    title.append(f" — {view.status}", style=_RUN_STYLE.get(view.status, ""))
    title.append(f"  run {view.run_id[:8]} · {elapsed:.1f}s", style="dim")
    tree = Tree(title)
    for step in view.steps:
        state = view.step_state(step)
        runs = view.tasks.get(step, [])
        if view.status != "running" and state in ("running", "pending"):
            # The run is over: a step still open never finishes now.
            state = {"cancelled": "cancelled"}.get(
                view.status, "failed" if state == "running" else "skipped"
            )
        rounds = _federated_rounds(runs) or view_rounds(view, step)
        own = [t for t in runs if t.node.round is None] if rounds is not None else []
        if own and own[-1].state.terminal:
            # A federated step is what its own task says: a node that dropped out of a
            # round does not fail the step when the rounds went on without it.
            state = _STATE_WORD.get(own[-1].state, state)
        sym, style = _STEP_STYLE[state]
        if rounds is not None:
            # Honest progress for a federated step: rounds done over rounds.
            done_rounds = rounds_done(runs)
            frac = min(1.0, done_rounds / rounds)
        else:
            frac = view.step_progress(step)
        head = Text()
        head.append(f"{sym} ", style=style)
        head.append(f"Step: {step} ", style="bold")
        if step in view.types:
            head.append(f"({view.types[step]}) ", style="dim")
        head.append(f"[{state}", style=style)
        if state == "running" and rounds is not None:
            head.append(f" · round {done_rounds}/{rounds}", style=style)
        elif state == "running":
            head.append(f" {frac * 100:.0f}%", style=style)
        took = _step_duration(runs)
        if state != "running" and took is not None:
            head.append(f" · {duration_text(took)}", style=style)
        head.append("]", style=style)
        if state == "running" and _stalls.stalled(view.run_id, step, runs):
            head.append(" stalled", style="bold red")
        if runs:
            head.append(f" {_bar(frac)}", style=style)
        branch = tree.add(head)
        if not runs:
            branch.add(Text("Tasks: (created when their inputs are ready)", style="dim"))
            continue
        if rounds is not None:
            # A federated step: the step's own task, then each node's latest round task
            # (the earlier rounds are in `flowfed runs show` and the dashboard).
            latest: dict[str, TaskRun] = {}
            for t in runs:
                if t.node.round is not None:
                    # One line per subvariant and node: the plan key without its round.
                    latest[re.sub(r"/round \d+/", "/", t.node.id)] = t
            for t in runs:
                if t.node.round is None:
                    branch.add(task_line(t))
            earlier = len(runs) - len(latest) - sum(1 for t in runs if t.node.round is None)
            # An error of an earlier round stays in sight above the fold: a node that
            # dropped out (its latest task is of an earlier round) or failed once.
            current = max((t.node.round or 0) for t in latest.values())
            for key, t in list(latest.items()):
                if t.error and (t.node.round or 0) < current:
                    del latest[key]
                    earlier += 1
            shown_ids = {id(t) for t in latest.values()}
            for t in runs:
                if t.node.round is not None and id(t) not in shown_ids and t.error:
                    who = getattr(t.node, "node", "?")
                    why = str(t.error.get("message", "failed"))[:200]
                    branch.add(Text(f"✗ {who} dropped in round {t.node.round}: {why}", style="red"))
                    earlier -= 1
            if earlier > 0:
                branch.add(Text(f"… {earlier} tasks of earlier rounds", style="dim"))
            for t in latest.values():
                branch.add(task_line(t, rounds))
            continue
        shown = runs[-max_tasks_per_step:]
        if len(runs) > len(shown):
            branch.add(Text(f"… {len(runs) - len(shown)} earlier tasks", style="dim"))
        for t in shown:
            branch.add(task_line(t))
    if view.error:
        tree.add(Text(f"error: {view.error}", style="red"))
    return tree


_STATE_WORD = {
    State.FINISHED: "completed",
    State.CACHED: "completed",
    State.ERROR: "failed",
    State.SKIPPED: "skipped",
    State.CANCELLED: "cancelled",
}


def rounds_done(runs: list[TaskRun]) -> int:
    """How many rounds of a federated step aggregated (its finished aggregation tasks)."""
    return len(
        {
            t.node.round
            for t in runs
            if t.node.round is not None
            and t.node.id.endswith("/aggregate")
            and t.state in (State.FINISHED, State.CACHED)
        }
    )


def view_rounds(view: Any, step: str) -> int | None:
    """The rounds a watcher was told about (the ``--server`` tree has no plan)."""
    rounds = getattr(view, "rounds", None)
    return rounds.get(step) if isinstance(rounds, dict) else None


def _step_duration(runs: list[TaskRun]) -> float | None:
    starts = [t.started_at for t in runs if t.started_at is not None]
    ends = [t.ended_at for t in runs if t.ended_at is not None]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


class _Stalls:
    """When each step last moved (a task's state, progress or counts changed)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[Any, float]] = {}

    def stalled(self, run_id: str, step: str, runs: list[TaskRun]) -> bool:
        sign = tuple(
            (
                id(t),
                str(t.state),
                t.progress,
                repr((getattr(t, "resources", None) or {}).get("progress")),
                len(t.metrics),
            )
            for t in runs
        )
        now = time.monotonic()
        key = (run_id, step)
        last = self.seen.get(key)
        if last is None or last[0] != sign:
            self.seen[key] = (sign, now)
            return False
        return now - last[1] > stall_after_s()


_stalls = _Stalls()


def _federated_rounds(runs: list[TaskRun]) -> int | None:
    """The configured rounds of a federated step's task among ``runs`` (else None)."""
    for t in runs:
        fed = t.node.federated
        if fed is not None:
            return fed.settings.rounds
    return None


class LiveMonitor:
    """Draws the tree while a run is going (only on a terminal)."""

    def __init__(self, console: Console, view_getter: Any) -> None:
        self.console = console
        self.get_view = view_getter
        self._live: Live | None = None

    def __enter__(self) -> LiveMonitor:
        self._live = Live(
            Group(Text("planning…")),
            console=self.console,
            refresh_per_second=8,
            get_renderable=self._frame,
            transient=False,
        )
        self._live.__enter__()
        return self

    def _frame(self) -> Any:
        view = self.get_view()
        return render(view) if view is not None else Text("starting…")

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
