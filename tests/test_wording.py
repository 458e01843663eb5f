"""Counts, ordinals and articles in messages (hand-worked English, not flowfed's own)."""

from __future__ import annotations

import doctest

import pytest

import flowfed.wording
from flowfed.wording import ordinal, plural, with_article


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
     (13, "13th"), (21, "21st"), (101, "101st"), (111, "111th"), (112, "112th"),
     (1002, "1002nd"), (0, "0th")],
)  # fmt: skip
def test_ordinal(n: int, expected: str) -> None:
    assert ordinal(n) == expected


def test_plural() -> None:
    assert [plural(n, "task") for n in (0, 1, 2)] == ["0 tasks", "1 task", "2 tasks"]
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(5, "entry", "entries") == "5 entries"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("admin", "an admin"), ("user", "a user"), ("node", "a node"), ("tool", "a tool"),
     ("integer", "an integer"), ("object", "an object"), ("array", "an array"),
     ("HTTP error", "an HTTP error"), ("one-off", "a one-off")],
)  # fmt: skip
def test_with_article(word: str, expected: str) -> None:
    assert with_article(word) == expected


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(flowfed.wording).failed == 0
