"""A node's own policy: what may run on it and what may leave it.

The node is the trust boundary: it trusts neither the server nor the flow. A step's
``shareable`` is only a *request*; this module holds the policy model (what the operator
allows) and the checks taken on the node before a tool starts (admission, data access)
and on each metric a tool reports. What a finished task's outputs may release (egress,
disclosure checks) is applied to the actual values by :mod:`flowfed.node.egress`, which
reads its thresholds from here. A node operator who writes no policy gets
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
