"""The examples in the fl docstrings are part of the contract: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "flowfed.fl",
    "flowfed.fl.types",
    "flowfed.fl.strategies",
    "flowfed.fl.secagg",
    "flowfed.fl.secagg_keys",
    "flowfed.fl.secagg_encoding",
    "flowfed.fl.secagg_messages",
    "flowfed.fl.secagg_masking",
    "flowfed.fl.secagg_unmasking",
    "flowfed.fl.privacy",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name != "flowfed.fl":
        assert result.attempted > 0
