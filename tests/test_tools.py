"""The @tool decorator: inputs, config schema, outputs, context, registry, register_task."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple, TypedDict

import pytest
from pydantic import ValidationError

from flowfed.tools import (
    Context,
    Lazy,
    Model,
    Registry,
    ToolDefinitionError,
    ToolOutputError,
    register_task,
    tool,
)


class Pair(NamedTuple):
    left: list
    right: list


class Scores(TypedDict):
    auc: float
    accuracy: float


class Weights(Model):
    def save(self, path):  # type: ignore[no-untyped-def]
        Path(path).write_text("w")

    @classmethod
    def load(cls, path):  # type: ignore[no-untyped-def]
        return cls()


def test_signature_becomes_inputs_config_and_named_outputs() -> None:
    reg = Registry()

    @tool(name="cut", version="2", type="data-transformation", registry=reg)
    def cut(rows: list, extra: Lazy, ctx: Context, *, at: int = 2, label: str) -> Pair:
        return Pair(rows[:at], rows[at:])

    spec = reg.get("cut")
    assert list(spec.inputs) == ["rows", "extra"] and spec.inputs["extra"].lazy
    assert spec.ctx_param == "ctx"
    assert spec.output_names == ["left", "right"] and spec.output_kind == "namedtuple"
    schema = spec.config_schema()
    assert schema["required"] == ["label"]
    assert schema["properties"]["at"] == {"default": 2, "title": "At", "type": "integer"}
    with pytest.raises(ValidationError):
        spec.config_model.model_validate({"label": "x", "unknown": 1})
    assert reg.get("cut@2") is spec
    with pytest.raises(KeyError):
        reg.get("cut@3")


def test_typeddict_outputs_and_model_outputs_are_recognised() -> None:
    reg = Registry()

    @tool(type="evaluation", registry=reg)
    def score(x: list) -> Scores:
        return {"auc": 1.0, "accuracy": 1.0}

    @tool(type="analysis", registry=reg)
    def fit(x: list) -> Weights:
        return Weights()

    assert reg.get("score").output_names == ["auc", "accuracy"]
    assert reg.get("fit").outputs[0].is_model
    with pytest.raises(ToolOutputError, match="missing \\['accuracy'\\]"):
        reg.get("score").split_outputs({"auc": 1.0})


def test_bad_definitions_fail_at_decoration_time() -> None:
    reg = Registry()
    with pytest.raises(ToolDefinitionError, match="unknown type 'trainer'"):
        tool(type="trainer", registry=reg)(lambda x: x)
    with pytest.raises(ToolDefinitionError, match=r"\*args"):

        @tool(registry=reg)
        def star(*args: int) -> int:
            return 0


def test_context_routes_telemetry_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, dict]] = []
    ctx = Context(lambda k, p: seen.append((k, p)))
    ctx.log("hello")
    ctx.metric("loss", 1)
    ctx.progress(3, 4)
    assert seen == [
        ("log", {"level": "info", "message": "hello"}),
        ("metric", {"name": "loss", "value": 1.0, "step": None}),
        # progress(3, 4) is also a count (the monitors show "3/4").
        ("progress", {"fraction": 0.75, "message": None, "done": 3, "total": 4, "unit": None}),
    ]
    assert capsys.readouterr().out == ""
    ctx.cancel()
    ctx.log("dropped")
    assert len(seen) == 3 and ctx.cancelled


def test_register_task_accepts_bare_and_named_forms() -> None:
    reg = Registry()

    @register_task(registry=reg)
    async def fetch(context: dict) -> dict:
        return {"status": "success", "data": 1, "error": None}

    @register_task("store", registry=reg)
    async def anything(context: dict) -> dict:
        return {"status": "success", "data": 2, "error": None}

    assert reg.names() == ["fetch", "store"]
    assert asyncio.run(reg.get("store").fn({}))["data"] == 2
    with pytest.raises(ToolDefinitionError, match="must be an async function"):
        register_task("sync", registry=reg)(lambda context: {})


def test_a_second_function_cannot_take_a_registered_name() -> None:
    reg = Registry()
    tool(name="same", registry=reg)(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):

        @tool(name="same", registry=reg)
        def other() -> int:
            return 2
