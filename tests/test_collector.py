"""flowfed.collector.paused: nested and overlapping pauses, and an application's own choice."""

from __future__ import annotations

import gc
import threading

from flowfed.collector import paused


def test_nested_pauses_switch_the_collector_back_on_after_the_outermost() -> None:
    assert gc.isenabled()
    with paused():
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pauses_overlapping_in_two_threads_end_with_the_last() -> None:
    entered, release_first = threading.Event(), threading.Event()

    def first() -> None:
        with paused():
            entered.set()
            release_first.wait(10)

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    with paused():
        release_first.set()
        t.join(10)
        # The first pause ended while this one runs: the collector stays off.
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_the_pause_still_ends_it() -> None:
    try:
        with paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
