"""The one lifecycle state machine: legal paths pass, illegal moves are refused."""

from __future__ import annotations

import pytest

from flowfed.runtime.lifecycle import IllegalTransition, Lifecycle, State, check_transition

HAPPY = [State.INITIALIZED, State.STARTED, State.RUNNING, State.FINISHED]


def test_the_happy_path_is_recorded_with_timestamps() -> None:
    lc = Lifecycle()
    for s in HAPPY:
        lc.advance(s)
    assert [t.to for t in lc.history] == HAPPY
    assert [t.src for t in lc.history] == [State.PENDING, *HAPPY[:-1]]
    assert all(a.at <= b.at for a, b in zip(lc.history, lc.history[1:], strict=False))


@pytest.mark.parametrize("live", [State.PENDING, State.INITIALIZED, State.STARTED, State.RUNNING])
def test_error_and_cancelled_are_reachable_from_every_live_state(live: State) -> None:
    check_transition(live, State.ERROR)
    check_transition(live, State.CANCELLED)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (State.PENDING, State.RUNNING),
        (State.PENDING, State.FINISHED),
        (State.INITIALIZED, State.FINISHED),
        (State.RUNNING, State.CACHED),
        (State.FINISHED, State.ERROR),
        (State.ERROR, State.RUNNING),
        (State.CACHED, State.RUNNING),
        (State.CANCELLED, State.FINISHED),
        (State.SKIPPED, State.INITIALIZED),
    ],
)
def test_illegal_transitions_are_refused(src: State, dst: State) -> None:
    with pytest.raises(IllegalTransition, match=f"{src} → {dst}"):
        check_transition(src, dst)


def test_cached_and_skipped_leave_pending_directly() -> None:
    check_transition(State.PENDING, State.CACHED)
    check_transition(State.PENDING, State.SKIPPED)
    assert State.CACHED.terminal and State.SKIPPED.terminal and not State.RUNNING.terminal
