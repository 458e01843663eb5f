"""benchmarks/fl/run.py's command line: defaults, node counts and refusals (no measuring)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "fl" / "run.py"


def harness() -> ModuleType:
    return load_script(RUN, "fl_bench_run_args")


def test_defaults_run_every_mode_and_scale_at_10_and_100_nodes_for_10_rounds() -> None:
    args = harness().parse_args([])
    assert args.only == {"flower", "simulate", "node", "scale"}
    assert args.scale_nodes == [10, 100]
    assert args.scale_rounds == 10
    assert args.repeat == 1
    assert not args.flower_at_scale and not args.iid and args.render is None


def test_scale_options_and_a_subset_of_modes_are_parsed() -> None:
    scale = ["--scale-nodes", "5,20", "--scale-rounds", "3", "--iid"]
    args = harness().parse_args(["--only", "scale, simulate", *scale, "--repeat", "3"])
    assert args.only == {"scale", "simulate"}
    assert args.repeat == 3
    assert (args.scale_nodes, args.scale_rounds, args.iid) == ([5, 20], 3, True)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--only", "flower,gpu"], "unknown modes ['gpu']"),
        (["--scale-nodes", "10,x"], "not a comma-separated list of integers"),
        (["--scale-nodes", "0"], "node counts must be >= 1"),
        (["--scale-rounds", "0"], "--scale-rounds must be >= 1"),
        (["--repeat", "0"], "--repeat must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        harness().parse_args(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err
