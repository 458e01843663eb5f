"""The Python API: a step of several tools built in code runs like the flow file's."""

from __future__ import annotations

from flowfed import Flow, Step, StepTool, run_flow, tool


@tool(name="steps_api_numbers", version="1", type="database-adapter")
def numbers(*, n: int = 3) -> list:
    """Count from one: the numbers 1..n."""
    return list(range(1, n + 1))


@tool(name="steps_api_square", version="1", type="preprocessing")
def square(xs: list) -> list:
    return [x * x for x in xs]


def test_a_step_of_several_tools_built_in_code() -> None:
    flow = Flow(
        name="api tools",
        steps=[
            Step(
                name="Prep",
                type="process",
                tools=[
                    StepTool(tool="steps_api_numbers", params={"n": 4}, outputs=["xs"]),
                    StepTool(
                        tool="steps_api_square", label="Squares", inputs={"xs": "xs"},
                        outputs=["sq"],
                    ),
                ],
            )
        ],
    )  # fmt: skip
    result = run_flow(flow, database_url="sqlite://", artifacts_url="memory://")
    assert result.status == "success", result.error
    assert result.value("sq") == [1, 4, 9, 16]  # worked by hand
    (step,) = result.to_dict()["steps"]
    assert step["name"] == "Prep" and step["type"] == "process"
    assert [t["label"] for t in step["tasks"]] == [
        "Count from one (central)",
        "Squares (central)",
    ]
