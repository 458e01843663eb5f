"""Trigger definitions: the YAML/JSON model, schedules, parameter templates and clocks.

Pure: nothing here touches the database. :mod:`flowfed.server.triggers.store` stores
triggers, :mod:`flowfed.server.triggers.service` fires them.

Example:
    >>> spec = TriggerSpec.model_validate(
    ...     {"name": "weekly", "flow": "train", "schedule": {"cron": "0 2 * * 1"}}
    ... )
    >>> spec.kind
    'cron'
    >>> render_params({"node": "${event.node}"}, {"node": "hospital-a"})
    {'node': 'hospital-a'}
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowfed.plan.expressions import Expression, ExpressionError

#: Names a trigger's ``when`` condition and its ``${...}`` parameter templates may use.
EXPRESSION_NAMES = ("event",)

#: Environment variable naming a file that holds "now" for the trigger service: TESTING
#: ONLY (the tests drive schedules without waiting for real minutes to pass).
CLOCK_FILE_ENV = "FLOWFED_TEST_CLOCK_FILE"

RunState = Literal["success", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Strict):
    """``cron`` (five fields, in ``timezone``) or ``every`` (an interval), not both."""

    cron: str | None = None
    timezone: str = "UTC"
    every: float | str | None = Field(
        None, description="Seconds, or a number with a unit: 90s, 15m, 2h, 1d."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r} (five fields: min hour dom mon dow)")
        return v

    @field_validator("every")
    @classmethod
    def _every(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds < 1:
            raise ValueError(f"interval must be at least 1 second, got {v!r}")
        return seconds

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'every'")
        return self

    def ticks(self, after: float, until: float, anchor: float) -> list[float]:
        """Tick times in ``(after, until]`` (unix seconds), oldest first (at most 1000).

        ``anchor`` is the start of an interval schedule (ticks at anchor + k * every).
        """
        out: list[float] = []
        if self.every is not None:
            step = float(self.every)
            k = max(1, int((after - anchor) // step) + 1) if after >= anchor else 1
            while (t := anchor + k * step) <= until and len(out) < 1000:
                if t > after:
                    out.append(t)
                k += 1
            return out
        from croniter import croniter

        assert self.cron is not None
        it = croniter(self.cron, datetime.fromtimestamp(after, ZoneInfo(self.timezone)))
        while len(out) < 1000:
            t = float(it.get_next(float))
            if t > until:
                break
            out.append(t)
        return out

    def last_tick(self, after: float, until: float, anchor: float) -> float | None:
        """The latest tick in ``(after, until]``, however many there are (None if none)."""
        if self.every is not None:
            step = float(self.every)
            k = int((until - anchor) // step)
            t = anchor + k * step
            return t if k >= 1 and after < t <= until else None
        from croniter import croniter

        assert self.cron is not None
        # Start just past `until` so a tick exactly at `until` counts; step back past it.
        it = croniter(self.cron, datetime.fromtimestamp(until + 1, ZoneInfo(self.timezone)))
        t = float(it.get_prev(float))
        while t > until:
            t = float(it.get_prev(float))
        return t if t > after else None

    def next_tick(self, after: float, anchor: float) -> float:
        """The first tick strictly after ``after``."""
        if self.every is not None:
            step = float(self.every)
            k = max(1, int((after - anchor) // step) + 1) if after >= anchor else 1
            t = anchor + k * step
            return t if t > after else t + step
        from croniter import croniter

        assert self.cron is not None
        it = croniter(self.cron, datetime.fromtimestamp(after, ZoneInfo(self.timezone)))
        return float(it.get_next(float))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(v: float | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"1d"`` (ValueError otherwise)."""
    if isinstance(v, int | float):
        return float(v)
    match = _DURATION.match(v)
    if match is None:
        raise ValueError(f"invalid duration {v!r} (a number of seconds, or 90s, 15m, 2h, 1d)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


class RunEvent(_Strict):
    """A run ended: optionally of one flow (a name glob), with one of some states."""

    flow: str | None = None
    status: RunState | list[RunState] | None = None

    def states(self) -> list[str]:
        """The states that match (all end states when none were given)."""
        if self.status is None:
            return ["success", "failed", "cancelled"]
        return [self.status] if isinstance(self.status, str) else list(self.status)


class ArtifactEvent(_Strict):
    """An artifact was registered whose name matches the glob ``name``."""

    name: str = "*"


class MetricEvent(_Strict):
    """A task reported metric ``name`` crossing a threshold (``above`` or ``below``).

    Fires once per run, on the first sample past the threshold.
    """

    name: str
    above: float | None = None
    below: float | None = None
    flow: str | None = None

    @model_validator(mode="after")
    def _one(self) -> MetricEvent:
        if (self.above is None) == (self.below is None):
            raise ValueError("a metric event needs exactly one of 'above' or 'below'")
        return self

    def crossed(self, value: float) -> bool:
        """Whether ``value`` is past the threshold."""
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below


class NodeDatasetEvent(_Strict):
    """A node reported a dataset whose content hash changed (node/dataset are globs)."""

    node: str = "*"
    dataset: str = "*"


class PlatformEvent(_Strict):
    """Any platform event of ``kind`` (see :mod:`flowfed.db.platform_events`)."""

    kind: str


class On(_Strict):
    """The event a trigger reacts to: exactly one of the fields."""

    run: RunEvent | None = None
    artifact: ArtifactEvent | None = None
    metric: MetricEvent | None = None
    node_dataset: NodeDatasetEvent | None = None
    platform: PlatformEvent | None = None

    @model_validator(mode="after")
    def _one(self) -> On:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "'on' needs exactly one of run, artifact, metric, node_dataset, platform"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def source(self) -> str:
        """The field that is set."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)


class TriggerSpec(_Strict):
    """A trigger as written in YAML or sent to ``POST /api/v1/triggers``."""

    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    flow: str = Field(min_length=1, max_length=255, description="The stored flow it starts.")
    version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Flow version (default: the latest)."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = None
    on: On | None = None
    when: str | None = Field(None, description="A condition over `event` (needs `on`).")
    catchup: bool = True
    overlap: Literal["skip", "queue", "allow"] = "skip"
    misfire_grace: float = Field(30.0, ge=0, description="Seconds a tick may be late.")
    enabled: bool = True
    description: str | None = None

    @field_validator("when")
    @classmethod
    def _when(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                Expression.parse(v, EXPRESSION_NAMES)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for text in _templates(v):
            try:
                Expression.parse(text, EXPRESSION_NAMES)
            except ExpressionError as exc:
                raise ValueError(f"template ${{{text}}}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _kind(self) -> TriggerSpec:
        if (self.schedule is None) == (self.on is None):
            raise ValueError("a trigger needs exactly one of 'schedule' or 'on'")
        if self.when is not None and self.on is None:
            raise ValueError("'when' needs an event ('on'): a condition is checked per event")
        if self.schedule is not None and _templates(self.params):
            raise ValueError("${...} templates need an event ('on'); a schedule has none")
        return self

    @property
    def kind(self) -> str:
        """cron, interval, event or condition."""
        if self.schedule is not None:
            return "cron" if self.schedule.cron is not None else "interval"
        return "condition" if self.when is not None else "event"

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether an event of this trigger's source passes its filters and ``when``.

        Raises ExpressionError when ``when`` cannot be evaluated on this event.
        """
        assert self.on is not None
        on = self.on
        if on.run is not None:
            if event["status"] not in on.run.states():
                return False
            if on.run.flow is not None and not fnmatch.fnmatchcase(event["flow"], on.run.flow):
                return False
        elif on.artifact is not None:
            if not fnmatch.fnmatchcase(event["name"], on.artifact.name):
                return False
        elif on.metric is not None:
            if on.metric.flow is not None and not fnmatch.fnmatchcase(
                event.get("flow") or "", on.metric.flow
            ):
                return False
        elif on.node_dataset is not None and not (
            fnmatch.fnmatchcase(str(event.get("node")), on.node_dataset.node)
            and fnmatch.fnmatchcase(str(event.get("dataset")), on.node_dataset.dataset)
        ):
            return False
        if self.when is not None:
            return bool(Expression.parse(self.when, EXPRESSION_NAMES).evaluate({"event": event}))
        return True


_TEMPLATE = re.compile(r"\$\{([^}]*)\}")


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return _TEMPLATE.findall(value)
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    return []


def render_params(params: Any, event: dict[str, Any]) -> Any:
    """``params`` with every ``${expr}`` replaced by its value over ``event``.

    A string that is exactly one template keeps the value's type (``"${event.version}"``
    gives an int); templates inside longer strings are formatted with ``str``. Raises
    ExpressionError naming the template when a value is missing.
    """
    if isinstance(params, dict):
        return {k: render_params(v, event) for k, v in params.items()}
    if isinstance(params, list):
        return [render_params(v, event) for v in params]
    if not isinstance(params, str) or "${" not in params:
        return params

    def value(text: str) -> Any:
        return Expression.parse(text, EXPRESSION_NAMES).evaluate({"event": event})

    whole = _TEMPLATE.fullmatch(params)
    if whole is not None:
        return value(whole[1])
    return _TEMPLATE.sub(lambda m: str(value(m[1])), params)


def iso(ts: float) -> str:
    """A unix time as UTC ISO 8601 (the form fire keys and the CLI use)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Clock(Protocol):
    """Where the trigger service reads "now" (unix seconds)."""

    def now(self) -> float: ...


class SystemClock:
    """The real time."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()


class ManualClock:
    """A clock tests set and advance by hand."""

    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        """The time last set."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds


class FileClock:
    """TESTING ONLY: "now" is the unix time (or ISO 8601 text) held in a file.

    Selected by ``$FLOWFED_TEST_CLOCK_FILE`` so tests can move a server subprocess's
    schedule time without waiting; an unreadable file falls back to the real time.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def now(self) -> float:
        """The time in the file."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read().strip()
        except OSError:
            return time.time()
        try:
            return float(text)
        except ValueError:
            return datetime.fromisoformat(text).timestamp()


def clock_from_env() -> Clock:
    """FileClock when ``$FLOWFED_TEST_CLOCK_FILE`` is set (tests), else SystemClock."""
    path = os.environ.get(CLOCK_FILE_ENV)
    return FileClock(path) if path else SystemClock()
