"""The one lifecycle state machine every task goes through, whatever runs it.

Seed 001 fixes the happy path ``Pending → Initialized → Started → Running → Finished``
with ``Error`` reachable from every live state; flowfed adds ``Cached`` (a cache hit skips
the work), ``Skipped`` (a condition did not route to the step, or an upstream step never
produced its inputs) and ``Cancelled``. Every runner and executor calls
:func:`check_transition` (directly or through :class:`Lifecycle`), so an illegal move is
refused in exactly one place.

Example:
    >>> lc = Lifecycle()
    >>> lc.advance(State.INITIALIZED).to
    <State.INITIALIZED: 'initialized'>
    >>> lc.advance(State.FINISHED)
    Traceback (most recent call last):
    ...
    flowfed.runtime.lifecycle.IllegalTransition: illegal task transition initialized → finished
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class State(StrEnum):
    """A task's lifecycle state (values are what the database and the APIs carry)."""

    PENDING = "pending"
    INITIALIZED = "initialized"
    STARTED = "started"
    RUNNING = "running"
    FINISHED = "finished"
    ERROR = "error"
    CACHED = "cached"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for states an attempt never leaves (only :meth:`Lifecycle.retry` starts a
        new attempt of the task, from Error)."""
        return self in TERMINAL


TERMINAL = frozenset({State.FINISHED, State.ERROR, State.CACHED, State.SKIPPED, State.CANCELLED})

# from-state → allowed to-states. Error and Cancelled are reachable from every live state
# because a tool can fail (or a user can press Ctrl-C) at any point of its life.
_ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset(
        {State.INITIALIZED, State.CACHED, State.SKIPPED, State.CANCELLED, State.ERROR}
    ),
    State.INITIALIZED: frozenset({State.STARTED, State.CANCELLED, State.ERROR}),
    State.STARTED: frozenset({State.RUNNING, State.CANCELLED, State.ERROR}),
    State.RUNNING: frozenset({State.FINISHED, State.CANCELLED, State.ERROR}),
}


class IllegalTransition(RuntimeError):
    """Raised when a runner proposes a move the lifecycle does not allow."""

    def __init__(self, src: State, dst: State) -> None:
        super().__init__(f"illegal task transition {src} → {dst}")
        self.src = src
        self.dst = dst


_NOWHERE: frozenset[State] = frozenset()


def check_transition(src: State, dst: State) -> None:
    """Refuse an illegal transition; the single gate every runner passes through."""
    if dst not in _ALLOWED.get(src, _NOWHERE):
        raise IllegalTransition(src, dst)


class Transition(NamedTuple):
    """One recorded move, with the wall-clock time it happened.

    A named tuple rather than a frozen dataclass: every task makes four of these, and a
    frozen dataclass's ``__init__`` goes through ``object.__setattr__`` per field.
    """

    src: State
    to: State
    at: float
    detail: str | None = None


@dataclass(slots=True)
class Lifecycle:
    """A task's current state and the transitions that led there."""

    state: State = State.PENDING
    history: list[Transition] = field(default_factory=list)

    def advance(self, dst: State, detail: str | None = None) -> Transition:
        """Move to ``dst`` (or raise :class:`IllegalTransition`) and record the move."""
        src = self.state
        check_transition(src, dst)
        tr = Transition(src, dst, time.time(), detail)
        self.state = dst
        self.history.append(tr)
        return tr

    def retry(self, detail: str | None = None) -> Transition:
        """Start a new attempt after a failed one: Error → Pending, recorded like any move.

        The only way out of a terminal state, and only out of Error: a step's own
        ``retries`` and the platform's resumption of an interrupted task both come here.

        Example:
            >>> lc = Lifecycle(State.ERROR)
            >>> lc.retry("retry 2").to
            <State.PENDING: 'pending'>
        """
        src = self.state
        if src is not State.ERROR:
            raise IllegalTransition(src, State.PENDING)
        tr = Transition(src, State.PENDING, time.time(), detail)
        self.state = State.PENDING
        self.history.append(tr)
        return tr
