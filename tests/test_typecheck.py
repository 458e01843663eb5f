"""The subtyping rules the planner applies to artifact edges (flowfed.plan.typecheck)."""

# typing.Optional and typing.Union on purpose: tools are annotated in both spellings.
# ruff: noqa: UP007, UP045

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Optional, TypedDict, TypeVar, Union

import numpy as np
import pandas as pd
import pytest

from flowfed import Lazy, Model
from flowfed.plan.typecheck import fits, fits_list_of, returned_type_problem


class Base(Model):
    pass


class Special(Base):
    pass


class Row(TypedDict):
    x: int


T = TypeVar("T")


@pytest.mark.parametrize(
    ("produced", "expected", "ok"),
    [
        (pd.DataFrame, list, False),
        (pd.DataFrame, pd.DataFrame, True),
        (np.ndarray, list, False),
        (list[int], Sequence, True),
        (list[int], Sequence[str], True),  # item types are not compared
        (dict, Mapping, True),
        (bool, int, True),
        (int, float, True),
        (float, int, False),
        (int, Optional[float], True),
        (Optional[list], list, False),  # the producer may return None
        (Optional[list], Optional[Sequence], True),
        (Union[int, str], Union[int, str, bytes], True),
        (Union[int, str], int, False),
        (Annotated[list, "rows"], list, True),
        (pd.DataFrame, Lazy, True),
        (pd.DataFrame, Optional[Lazy], True),
        (pd.DataFrame, Any, True),
        (Any, list, True),
        (pd.DataFrame, "SomeForwardRef", True),
        (pd.DataFrame, T, True),
        (Special, Base, True),
        (Special, Model, True),
        (Base, Special, True),  # a more general model: known only at run time
        (Special, list, False),
        (dict, Row, True),
        (list, Row, False),
    ],
)
def test_fits(produced: Any, expected: Any, ok: bool) -> None:
    assert fits(produced, expected) is ok


def test_fan_in_compares_the_item_type() -> None:
    assert fits_list_of(dict, dict[str, Any] | list[dict[str, Any]])
    assert fits_list_of(dict, list)
    assert not fits_list_of(pd.DataFrame, list[dict])
    assert not fits_list_of(dict, dict)


def test_returned_values_follow_the_tool_type_rules() -> None:
    problem = returned_type_problem("preprocessing", "prep", {"output": Special()})
    assert problem is not None and "returned a model as output 'output' (Special)" in problem
    assert returned_type_problem("preprocessing", "prep", {"output": [1]}) is None
    assert returned_type_problem("analysis", "fit", {"model": Special()}) is None
    assert "returned no model" in str(returned_type_problem("analysis", "fit", {"model": 1}))
