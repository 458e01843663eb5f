"""The node agent's cache of decoded node-store tables: copies, LRU order, byte budget."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowfed.node.task_inputs import DecodedCache


def test_copies_lru_and_budget() -> None:
    cache = DecodedCache(budget=100)
    table = pd.DataFrame({"x": [1, 2, 3]})
    cache.put("t", table, 40)
    table["x"] = 0  # the caller's object is not the cached one
    got = cache.get("t")
    assert got is not None and got["x"].tolist() == [1, 2, 3]
    got["x"] = 9  # nor is what a task receives
    assert cache.get("t")["x"].tolist() == [1, 2, 3]

    cache.put("a", np.arange(3), 40)
    assert cache.get("t") is not None  # "t" is now the most recently used
    cache.put("b", np.arange(4), 40)  # over budget: the least recently used ("a") goes
    assert cache.get("a") is None
    assert cache.get("t") is not None and cache.get("b") is not None
    assert cache.size == 80

    cache.put("huge", np.arange(5), 101)  # larger than the whole budget: not kept
    assert cache.get("huge") is None and cache.size == 80

    off = DecodedCache(budget=0)  # --cache-mb 0
    off.put("t", table, 1)
    off.put("empty", np.arange(0), 0)
    assert off.get("t") is None and off.get("empty") is None and off.size == 0
