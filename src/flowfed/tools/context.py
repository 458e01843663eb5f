"""What a running tool sees of the platform: :class:`Context`, its event sink, cancellation.

A tool reports logs, metrics and progress through its context and checks it for
cancellation; the engine, a process pipe or the tool-side runtime's WebSocket is the sink
behind it. The context is a room of its own because every runner builds one and none of
them needs the registry or the signature reading of :mod:`flowfed.tools.core` for it.

Example:
    >>> events = []
    >>> ctx = Context(lambda kind, payload: events.append(kind), step="train")
    >>> ctx.metric("loss", 0.5); events
    ['metric']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EventSink = Callable[[str, dict[str, Any]], None]
"""Where a context's telemetry goes (the engine, a process pipe, a WebSocket)."""


class TaskCancelled(Exception):
    """Raised inside a tool by :meth:`Context.check_cancelled` once its task is cancelled."""


class Context:
    """What a running tool sees of the platform: logs, metrics, progress, identity.

    Tools report through the context instead of printing, so telemetry reaches the
    monitor, the database and the APIs without touching global stdout.

    Example:
        >>> events = []
        >>> ctx = Context(lambda kind, payload: events.append((kind, payload)), step="train")
        >>> ctx.log("epoch done"); ctx.metric("loss", 0.25, step=1); ctx.progress(1, 4)
        >>> [k for k, _ in events]
        ['log', 'metric', 'progress']
    """

    __slots__ = (
        "_cancelled",
        "_client_state",
        "_sink",
        "attempt",
        "dataset",
        "iteration",
        "node",
        "round",
        "run_id",
        "step",
        "task_id",
    )

    def __init__(
        self,
        sink: EventSink | None = None,
        *,
        run_id: str = "",
        task_id: str = "",
        step: str = "",
        node: str = "local",
        attempt: int = 1,
        iteration: int = 1,
        dataset: dict[str, Any] | None = None,
        round: int | None = None,
    ) -> None:
        self._sink = sink
        self._cancelled = False
        self.run_id = run_id
        self.task_id = task_id
        self.step = step
        self.node = node
        self.attempt = attempt
        self.iteration = iteration
        # The node dataset this task works on (``on: each-dataset``): name, path, format,
        # schema, as the node registered it. None for central tasks.
        self.dataset = dataset
        self.round = round
        # Set by the node for a federated step's tasks (flowfed.tools.client_state).
        self._client_state: Any = None

    def log(self, message: str, level: str = "info") -> None:
        """Record a log line for this task."""
        if self._sink is not None:
            self._sink("log", {"level": level, "message": str(message)})

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a numeric metric (the monitor shows the latest value of each)."""
        if self._sink is not None:
            self._sink("metric", {"name": name, "value": float(value), "step": step})

    def progress(
        self,
        done: float,
        total: float | None = None,
        message: str | None = None,
        *,
        unit: str | None = None,
    ) -> None:
        """Report progress: ``progress(0.4)``, ``progress(40, 100)`` or, with counts the
        monitors show ("5,000/5,000 images"), ``progress(5000, 5000, unit="images")``.

        ``done`` and ``total`` are counts (``total`` None: not known yet); ``unit`` names
        what is counted. A node passes on only numbers and, unless its policy shares
        logs, only a unit from :data:`flowfed.runtime.usage.UNITS`.
        """
        frac = float(done) / float(total) if total else (0.0 if unit else float(done))
        if self._sink is not None:
            payload: dict[str, Any] = {"fraction": max(0.0, min(1.0, frac)), "message": message}
            if total is not None or unit is not None:
                payload.update(done=done, total=total, unit=unit)
            self._sink("progress", payload)

    def report_resources(self, figures: dict[str, float]) -> None:
        """For runners, not tools: the attempt's resource figures so far (``wall_s``,
        ``cpu_s``, ``peak_rss_mb``; see :mod:`flowfed.runtime.usage`)."""
        if self._sink is not None:
            self._sink("resources", figures)

    @property
    def client_state(self) -> Any:
        """This node's state for the federated step, kept between rounds on the node.

        A :class:`flowfed.tools.client_state.ClientState` (a dict of numpy arrays) that
        the node stores after the task succeeds and hands to the next round's task on
        the same node; it never leaves the node (docs/federated.md, Per-client state).
        Raises ``RuntimeError`` for a task that has none (a central task, a step that is
        not federated).

        Example:
            >>> import numpy as np
            >>> from flowfed.tools.client_state import ClientState
            >>> ctx = Context(None); ctx._client_state = ClientState()
            >>> ctx.client_state["seen"] = np.ones(2); ctx.client_state["seen"]
            array([1., 1.])
        """
        if self._client_state is None:
            raise RuntimeError(
                f"task {self.task_id or self.step!r} has no client state: only the training "
                "tasks of a federated step, on a node, keep state between rounds"
            )
        return self._client_state

    @property
    def has_client_state(self) -> bool:
        """Whether :attr:`client_state` is available to this task."""
        return self._client_state is not None

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled or timed out."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task was cancelled (call it in long loops)."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id or self.step} was cancelled")

    def cancel(self) -> None:
        """Mark the task cancelled; further telemetry is dropped."""
        self._cancelled = True
        self._sink = None
