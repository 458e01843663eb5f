"""The engine: schedules a TaskGraph's tasks through the lifecycle."""

from flowfed.engine.local import LocalEngine, RunResult
from flowfed.engine.state import RunView, TaskRun

__all__ = ["LocalEngine", "RunResult", "RunView", "TaskRun"]
