"""What leaves a node: the egress decision on each output, and the scrubbing of metadata.

The node's policy (:mod:`flowfed.node.policy`) says what the operator allows; this module
applies it to actual values, after a tool ran and before a byte leaves the node. Every
output a step asks to share gets a :class:`Release` from :class:`Egress`: key material
and the zero-weight template of the built-in secure-aggregation tools pass; a model or an
array passes DataSHIELD's minimum-rows and parameters-per-row checks or stays; a table,
a pickle or a file never leaves; a JSON aggregate must cover at least ``min_rows`` rows,
hold no list close to one entry per record, and has its small count cells suppressed.
:func:`safe_meta` and :func:`error_type` scrub what accompanies an output or an error.

A room of its own because it is the node's release filter: it works on the values a tool
produced (numpy, pandas, models), while the policy model only parses and checks names.

Example:
    >>> from flowfed.artifacts import materialize
    >>> from flowfed.node.policy import NodePolicy
    >>> r = Egress(NodePolicy()).decide("flowfed.column_sums", "sums",
    ...     materialize({"count": {"x": 3}}), {"count": {"x": 3}}, rows=3)
    >>> r.released, r.rule
    (False, 'disclosure.min_rows')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from flowfed.node.policy import METRIC_NAME, NodePolicy

#: Exception type names a node reports centrally (a class name can be built at run time).
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


@dataclass
class Release:
    """The node's decision on one output the step asked to share.

    ``data`` is what leaves (``None``: nothing); ``suppressed`` counts count-table cells
    set to ``null``; ``rows`` is how many of the node's rows the output covers.
    """

    output: str
    kind: str
    released: bool
    rows: int | None
    data: bytes | None = None
    reason: str = ""
    rule: str = ""
    suppressed: int = 0
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


#: Built-in tools whose outputs the node knows: secure-aggregation key material (no
#: data-derived values) and masked updates (model parameters under a one-time mask).
BUILTIN_RELEASES: dict[tuple[str, str], str] = {
    ("flowfed.secagg_keys", "public_key"): "key-material",
    ("flowfed.secagg_reveal", "seeds"): "key-material",
    ("flowfed.secagg_mask", "masked"): "parameters",
    # three masked sums (rows * val_loss, rows * val_accuracy, rows): uniformly random alone
    ("flowfed.fl_eval_mask", "masked"): "parameters",
    ("flowfed.fl_template", "template"): "template",
}


def count_parameters(value: Any, depth: int = 0) -> int:
    """How many numbers a model (or array, or nested container) carries.

    A model's ``get_weights()`` when it has one; otherwise every array, number and nested
    attribute reachable from it (a nearest-neighbour model that keeps its training rows
    counts them all).

    >>> import numpy as np
    >>> count_parameters([np.zeros((3, 2)), np.zeros(2)])
    8
    """
    import numpy as np

    if depth > 8:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float | complex | np.number):
        return 1
    if isinstance(value, str | bytes):
        return 0
    if isinstance(value, dict):
        return sum(count_parameters(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(count_parameters(v, depth + 1) for v in value)
    get = getattr(value, "get_weights", None)
    if callable(get) and depth == 0:
        try:
            n = count_parameters(list(get()), depth + 1)
            # SCAFFOLD's control-variate change leaves beside the weights (as many again).
            training = getattr(value, "training", None)
            if isinstance(training, dict):
                n += count_parameters(training.get("control_delta") or [], depth + 1)
            return n
        except Exception:  # a model that cannot list its weights: count its attributes
            pass
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame | pd.Series):
            return int(value.size)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict):
        return sum(count_parameters(v, depth + 1) for k, v in attrs.items() if not callable(v) or k)
    return 0


def rows_of(value: Any) -> int | None:
    """How many records a value holds or was built from (``None`` if it does not say)."""
    import numpy as np

    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame | pd.Series):
            return len(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        return int(value.shape[0])
    training = getattr(value, "training", None)
    if isinstance(training, dict) and isinstance(training.get("rows"), int):
        return int(training["rows"])
    n = getattr(value, "num_examples", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    return None


class Egress:
    """Decides, output by output, what leaves a node under ``policy``.

    Example:
        >>> from flowfed.artifacts import materialize
        >>> e = Egress(NodePolicy())
        >>> r = e.decide("flowfed.column_sums", "sums", materialize({"count": {"x": 3}}),
        ...              {"count": {"x": 3}}, rows=3)
        >>> r.released, r.rule
        (False, 'disclosure.min_rows')
    """

    def __init__(self, policy: NodePolicy) -> None:
        self.policy = policy

    def decide(
        self, tool: str, output: str, mat: Any, value: Any, rows: int | None, width: int = 0
    ) -> Release:
        """The decision for ``output`` of ``tool`` (``mat`` is its materialized form).

        ``rows`` is how many of the node's rows the output covers, ``width`` the most
        columns among the tables it was built from: a list of names (strings) as long as
        the columns, such as the column names, is a description, not a record per row.
        """
        d = self.policy.disclosure
        kind = mat.kind
        base = Release(output, kind, False, rows)
        category = BUILTIN_RELEASES.get((tool, output))
        if category == "key-material":
            base.category = category
            return self._ok(base, mat.data)
        if category == "template":
            # Every weight is zero: the model's shape, not its values.
            base.category = category
            return self._ok(base, mat.data)
        if category == "parameters" or kind in ("model", "numpy"):
            base.category = "parameters"
            params = _masked_size(value) if category == "parameters" else count_parameters(value)
            one_per_row = (
                kind == "numpy"
                and rows is not None
                and rows > 1
                and getattr(value, "ndim", 0) >= 1
                and int(value.shape[0]) == rows
            )
            if one_per_row:
                return self._no(
                    base,
                    "egress.row_shaped",
                    f"an array with one entry per record ({rows} rows) never leaves a node",
                )
            if rows is None:
                return self._no(
                    base,
                    "disclosure.max_params_per_row",
                    f"{params} parameters over an unknown number of rows: the node cannot "
                    "check the parameters-per-row limit",
                )
            if rows < d.min_rows:
                return self._no(
                    base,
                    "disclosure.min_rows",
                    f"trained on {rows} rows, fewer than the minimum of {d.min_rows}",
                )
            limit = d.max_params_per_row * rows
            if params > limit:
                return self._no(
                    base,
                    "disclosure.max_params_per_row",
                    f"{params} parameters for {rows} rows exceeds the limit of "
                    f"{d.max_params_per_row:g} parameters per row ({math.floor(limit)})",
                )
            return self._ok(base, mat.data)
        if kind == "pandas":
            return self._no(
                base,
                "egress.row_shaped",
                f"a table ({_shape(value)}) never leaves a node: share an aggregate instead",
            )
        if kind in ("pickle", "bytes", "file"):
            return self._no(
                base,
                "egress.opaque",
                f"{kind} output cannot be checked for disclosure and never leaves a node",
            )
        if kind != "json":
            return self._no(base, "egress.opaque", f"a {kind} output never leaves a node")
        base.category = "aggregate"
        if rows is None:
            return self._no(
                base,
                "disclosure.min_rows",
                "an aggregate over an unknown number of rows (the task read no node data the "
                "node can count)",
            )
        if rows < d.min_rows:
            return self._no(
                base,
                "disclosure.min_rows",
                f"an aggregate over {rows} rows, fewer than the minimum of {d.min_rows}",
            )
        max_len = max(1, rows // d.min_rows)
        longest = _longest_list(value, names_up_to=width)
        if longest > max_len:
            return self._no(
                base,
                "egress.row_shaped",
                f"a list of {longest} entries from {rows} rows (at most {max_len}, one per "
                f"{d.min_rows} rows) is too close to one entry per record",
            )
        suppressed = 0
        if d.suppress_small_cells:
            value, suppressed = _suppress(value, d.min_rows)
        base.suppressed = suppressed
        if suppressed:
            from flowfed.artifacts import materialize

            data = materialize(value).data
            base.meta = {"suppressed_cells": suppressed}
            return self._ok(base, data)
        return self._ok(base, mat.data)

    @staticmethod
    def _ok(r: Release, data: bytes) -> Release:
        r.released = True
        r.data = data
        return r

    @staticmethod
    def _no(r: Release, rule: str, reason: str) -> Release:
        r.released = False
        r.rule = rule
        r.reason = reason
        return r


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return " x ".join(str(s) for s in shape)
    return type(value).__name__


def _masked_size(value: Any) -> int:
    """The number of values in a masked secure-aggregation payload (its ``data``)."""
    if isinstance(value, dict):
        data = value.get("data")
        if isinstance(data, list):
            return len(data)
        if isinstance(data, str):
            # base64 of uint64 values
            return (len(data) * 3 // 4) // 8
    return count_parameters(value)


def _longest_list(value: Any, depth: int = 0, *, names_up_to: int = 0) -> int:
    """The longest list in ``value``; a list of at most ``names_up_to`` strings counts 0."""
    if depth > 64:
        return 0
    if isinstance(value, dict):
        return max(
            (_longest_list(v, depth + 1, names_up_to=names_up_to) for v in value.values()),
            default=0,
        )
    if isinstance(value, list):
        if len(value) <= names_up_to and all(isinstance(v, str) for v in value):
            return 0
        inner = max(
            (_longest_list(v, depth + 1, names_up_to=names_up_to) for v in value), default=0
        )
        return max(len(value), inner)
    return 0


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _suppress(value: Any, k: int, depth: int = 0) -> tuple[Any, int]:
    """``value`` with count-table cells ``0 < c < k`` set to ``None``; how many were.

    A count table is a list or mapping of at least two non-negative integers (a
    histogram, a confusion matrix, counts per category).
    """
    if depth > 64:
        return value, 0
    if isinstance(value, dict):
        vals = list(value.values())
        if len(vals) >= 2 and all(_is_count(v) for v in vals):
            out = {key: (None if 0 < v < k else v) for key, v in value.items()}
            return out, sum(1 for v in vals if 0 < v < k)
        total = 0
        res: dict[str, Any] = {}
        for key, v in value.items():
            res[key], n = _suppress(v, k, depth + 1)
            total += n
        return res, total
    if isinstance(value, list):
        if len(value) >= 2 and all(_is_count(v) for v in value):
            return [None if 0 < v < k else v for v in value], sum(1 for v in value if 0 < v < k)
        total = 0
        items: list[Any] = []
        for v in value:
            got, n = _suppress(v, k, depth + 1)
            items.append(got)
            total += n
        return items, total
    return value, 0


def safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of an output's metadata that may be catalogued centrally.

    Numbers, short plain identifiers and lists of integers; a file name (free text a tool
    chooses) is dropped.

    >>> safe_meta({"rows": 3, "filename": "patient-7.txt", "class": "m:Model"})
    {'rows': 3, 'class': 'm:Model'}
    """
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k == "filename" or not isinstance(k, str) or not METRIC_NAME.fullmatch(k):
            continue
        plain = isinstance(v, int | float) or (
            isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.:<>|-]{1,200}", v) is not None
        )
        shape = isinstance(v, list) and len(v) <= 16 and all(isinstance(x, int) for x in v)
        if plain or shape:
            out[k] = v
    return out


def error_type(name: Any) -> str:
    """An exception's type name as it may leave the node (``Exception`` if odd).

    >>> error_type("ValueError"), error_type("patient 7 is 63")
    ('ValueError', 'Exception')
    """
    if isinstance(name, str) and ERROR_TYPE.fullmatch(name):
        return name
    return "Exception"
