"""A node's own policy: what may run on it and what may leave it.

The node is the trust boundary: it trusts neither the server nor the flow. A step's
``shareable`` is only a *request*; this module holds the decision, taken on the node,
before a tool starts (admission, data access) and before a byte leaves (egress,
disclosure checks, logs, metrics, errors). A node operator who writes no policy gets
:data:`DEFAULT_POLICY`, the strict one; ``flowfed node start --policy FILE`` reads a YAML
file (docs/node-policy.md) whose every key is optional and falls back to that default.

Anchors: vantage6's node policies (allowed algorithms and organizations, a switch not to
share algorithm logs), NVIDIA FLARE's site policies and result filters (enforced at the
site, before anything is sent), DataSHIELD's disclosure traps (a minimum cell count, a
minimum subset size, at most 0.33 model parameters per observation).

Only the standard library, pydantic and YAML: the node never imports the server.

Example:
    >>> policy = NodePolicy()
    >>> policy.disclosure.min_rows, policy.disclosure.max_params_per_row
    (5, 0.33)
    >>> policy.metric_allowed("loss", 0.25), policy.metric_allowed("row 7: 63 yrs", 1.0)
    (True, False)
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Metric names a node lets through: short, plain identifiers (never a value built from
#: a row, which a free-form name could carry).
METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Inside an allowed name, what looks like a value rather than a word: a run of digits
#: (a patient number, a date), or a long run of letters and digits that mixes both (an
#: MRN, a hash, a token). A name built from a row usually carries one.
_VALUE_LIKE = re.compile(r"\d{4,}|(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{10,}")
#: Distinct metric names one task may report: bounds what names could carry.
MAX_METRIC_NAMES = 64
#: Exception type names a node reports centrally (a class name can be built at run time).
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
#: A policy file larger than this is refused before it is parsed.
MAX_POLICY_BYTES = 1 << 20
#: Config keys whose value names where data comes from: refused on a node unless listed.
_LOCATION_KEYS = frozenset(
    {"path", "paths", "url", "uri", "file", "filename", "dsn", "source", "location", "dir"}
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class PolicyError(ValueError):
    """A policy file that cannot be read or is invalid: the message says where."""


class PolicyRefusal(Exception):
    """The node's policy refuses a task or an output; ``rule`` names the policy key."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolRule(_Strict):
    """One tool the node runs: a name (``fnmatch`` pattern), its versions, its code."""

    name: str = Field(description="tool name or pattern, e.g. flowfed.* or mylab.train")
    versions: list[str] | None = Field(None, description="allowed versions (any if unset)")
    code_hash: list[str] | None = Field(
        None, description="allowed SHA-256 code hashes (`flowfed tools list --json` shows them)"
    )

    @field_validator("code_hash", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class ToolsPolicy(_Strict):
    """Which tools may run. ``allow`` unset: the built-in library and every ``--import``."""

    allow: list[ToolRule] | None = None
    #: ``manual``: a new (tool, code hash) waits until ``flowfed node approve``.
    approval: Literal["none", "manual"] = "none"


class PrincipalsPolicy(_Strict):
    """Who may place tasks here, and for which flows (``fnmatch`` patterns)."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    flows: list[str] = Field(default_factory=lambda: ["*"])
    #: ``manual``: a submitting principal never seen before waits for approval.
    approval: Literal["none", "manual"] = "none"


class DataPolicy(_Strict):
    """Data access: only the node's registered datasets, plus these files (exact paths)."""

    paths: list[str] = Field(default_factory=list)


class DisclosurePolicy(_Strict):
    """DataSHIELD-style disclosure checks on what leaves (all on by default)."""

    #: ``k``: an aggregate over fewer rows is refused; count cells below it are suppressed.
    min_rows: int = Field(5, ge=1)
    #: A model with more parameters than this fraction of its training rows is refused.
    max_params_per_row: float = Field(0.33, gt=0)
    #: Suppress (``null``) count-table cells with ``0 < count < min_rows``.
    suppress_small_cells: bool = True


class SecureAggregationPolicy(_Strict):
    """Per-node facts secure aggregation is meant to hide (example counts, losses)."""

    #: ``aggregate``: only inside the aggregate (the default); ``node``: per node too.
    release: Literal["aggregate", "node"] = "aggregate"


class SharingPolicy(_Strict):
    """Whether the text of logs and errors leaves the node (never, by default)."""

    logs: bool = False
    errors: bool = False


class LimitsPolicy(_Strict):
    """Resource limits of each sandboxed tool."""

    memory_mb: int = Field(2048, ge=64)
    processes: int = Field(64, ge=4)
    cpu_seconds: int = Field(3600, ge=1)


class NodePolicy(_Strict):
    """A node's policy. Every section defaults to the strict built-in choice."""

    version: Literal[1] = 1
    tools: ToolsPolicy = ToolsPolicy()
    principals: PrincipalsPolicy = PrincipalsPolicy()
    data: DataPolicy = DataPolicy()
    disclosure: DisclosurePolicy = DisclosurePolicy()
    secure_aggregation: SecureAggregationPolicy = SecureAggregationPolicy()
    share: SharingPolicy = SharingPolicy()
    limits: LimitsPolicy = LimitsPolicy()

    def digest(self) -> str:
        """SHA-256 of the effective policy (recorded in the audit log at start)."""
        raw = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()

    # -- admission -----------------------------------------------------------------------

    def check_tool(self, name: str, version: str, code: str, builtin_or_imported: bool) -> None:
        """Refuse a tool the policy does not list (:class:`PolicyRefusal`, rule ``tools``)."""
        rules = self.tools.allow
        if rules is None:
            if not builtin_or_imported:
                raise PolicyRefusal("tools.allow", f"tool '{name}' is not installed on this node")
            return
        for rule in rules:
            if not fnmatch.fnmatchcase(name, rule.name):
                continue
            if rule.versions is not None and version not in rule.versions:
                continue
            if rule.code_hash is not None and code not in rule.code_hash:
                raise PolicyRefusal(
                    "tools.allow.code_hash",
                    f"tool '{name}' {version} has code hash {code[:16]}…, which the node's "
                    f"policy does not pin (it allows {_short(rule.code_hash)})",
                )
            return
        raise PolicyRefusal(
            "tools.allow", f"tool '{name}' version {version} is not allowed by the node's policy"
        )

    def check_principal(self, principal: str, flow: str) -> None:
        """Refuse a submitter or flow the policy does not allow (rule ``principals``)."""
        p = self.principals
        if any(fnmatch.fnmatchcase(principal, pat) for pat in p.deny):
            raise PolicyRefusal(
                "principals.deny", f"principal '{principal}' is denied by the node's policy"
            )
        if not any(fnmatch.fnmatchcase(principal, pat) for pat in p.allow):
            raise PolicyRefusal(
                "principals.allow",
                f"principal '{principal}' may not place tasks on this node",
            )
        if not any(fnmatch.fnmatchcase(flow, pat) for pat in p.flows):
            raise PolicyRefusal(
                "principals.flows", f"flow '{flow}' may not place tasks on this node"
            )

    def check_data_access(self, tool: str, config: Any) -> None:
        """Refuse a config that names a file or URL to read (rule ``data.paths``).

        A tool on a node reads data only through the node's registered datasets; a path
        or URL in its config is refused unless the policy lists that exact path.
        """
        allowed = {str(Path(p)) for p in self.data.paths}
        for where, value in _locations(config, ""):
            if str(Path(value)) in allowed and not _URL.match(value):
                continue
            raise PolicyRefusal(
                "data.paths",
                f"tool '{tool}' names {where}={value!r} in its config; a tool on a node reads "
                "data only through the node's registered datasets (on: each-dataset), "
                "unless the node's policy lists that path under data.paths",
            )

    # -- telemetry -----------------------------------------------------------------------

    def metric_allowed(self, name: Any, value: Any) -> bool:
        """Whether a metric may leave: a plain short name and a finite number."""
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            return False
        if _VALUE_LIKE.search(name):
            return False
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(float(value))


def _short(hashes: list[str]) -> str:
    return ", ".join(h[:16] + "…" for h in hashes)


def _names_place(key: Any, v: Any) -> bool:
    """Whether config value ``v`` under ``key`` names a file or URL to read."""
    if not isinstance(v, str) or not v.strip():
        return False
    if str(key).lower() in _LOCATION_KEYS:
        return True
    return bool(_URL.match(v)) or v.startswith(("/", "~", "../"))


def _locations(value: Any, where: str) -> list[tuple[str, str]]:
    """``(key path, value)`` of every config string that names a place to read data."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = f"{where}.{k}" if where else str(k)
            if _names_place(k, v):
                found.append((key, v))
            else:
                found.extend(_locations(v, key))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            key = f"{where}[{i}]"
            if _names_place("", v):
                found.append((key, v))
            else:
                found.extend(_locations(v, key))
    return found


#: The strict policy of a node whose operator wrote none.
DEFAULT_POLICY = NodePolicy()


def load_policy(path: Path | None) -> NodePolicy:
    """The policy in ``path`` (YAML), or :data:`DEFAULT_POLICY` for ``None``.

    Raises :class:`PolicyError` naming the file, and the line or key at fault.

    Example:
        >>> load_policy(None) is DEFAULT_POLICY
        True
    """
    if path is None:
        return DEFAULT_POLICY
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: a policy file is at most {MAX_POLICY_BYTES} bytes")
    try:
        data = yaml.load(raw, Loader=_make_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{path}{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy is a mapping of sections (tools, disclosure, ...)")
    try:
        return NodePolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PolicyError(f"{path}: {where}: {err['msg']}") from None


def _make_loader() -> Any:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """A safe loader without aliases: a policy never needs them, a bomb does."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.YAMLError(
                    f"line {event.start_mark.line + 1}: aliases are not allowed in a policy"
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


# ------------------------------------------------------------------------------ egress


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
