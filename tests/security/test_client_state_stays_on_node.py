"""Red team: a node's client state (``ctx.client_state``) never reaches the central side.

A trainer plants marker bytes in its client state every round and checks, from round 2
on, that the node handed them back (so the state really was kept). After the run, the
marker (raw, hex and base64 at every alignment) must be nowhere central: the catalog
(SQLite with its WAL), the artifact store, the server's files and logs, the CLI's output
(the run's events and ``--json`` result); it must be in the node's own folder.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from tests.federated.conftest import errors, run_cli
from tests.federated.test_scaffold import TINY, _sandbox_sees_this_checkout, _table, write_case
from tests.security.central import find_marker

MARKER = b"CLIENT-STATE-MARKER-5b1e9c0d-never-central"

PLANTER = (
    f"MARKER_BYTES = {MARKER!r}\n"
    + """
import numpy as np
import pandas as pd
from flowfed.tools import Context, tool
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression

MARKER = np.frombuffer(MARKER_BYTES, dtype=np.uint8)


@tool(name="redteam.state_planter", version="1.0", type="analysis")
def state_planter(train: pd.DataFrame, ctx: Context,
                  global_model: LogisticRegressionModel | None = None, *, epochs: int = 3,
                  learning_rate: float = 0.5,
                  scaffold_c: list[list[float]] | None = None) -> LogisticRegressionModel:
    state = ctx.client_state
    if ctx.round and ctx.round > 1:
        kept = state.get("secret")
        if kept is None or kept.tobytes() != MARKER.tobytes():
            raise RuntimeError("the node did not keep the client state")
    state["secret"] = MARKER
    return logistic_regression(train, ctx, global_model, epochs=epochs,
                                           learning_rate=learning_rate, scaffold_c=scaffold_c)
"""
)


def _forms(marker: bytes) -> list[bytes]:
    """The marker raw, in hex, and in base64 at each of the three alignments."""
    forms = [marker, marker.hex().encode()]
    for pad in range(3):
        enc = base64.b64encode(b"\\0" * pad + marker)
        forms.append(enc[4 * ((pad + 2) // 3) + 4 : -4])  # the middle, shift-independent
    return forms


@pytest.mark.parametrize("mode", ["simulate", "inprocess", "subprocess", "sandbox"])
def test_client_state_marker_never_reaches_the_central_side(tmp_path: Path, mode: str) -> None:
    if mode == "sandbox" and not _sandbox_sees_this_checkout():
        pytest.skip("the sandbox imports the installed flowfed, not this checkout")
    (tmp_path / "planter.py").write_text(PLANTER)
    flow = write_case(
        tmp_path, {n: _table(x, y) for n, (x, y) in TINY.items()}, rounds=3, epochs=3,
        lr=0.5, strategy="scaffold", trainer="redteam.state_planter",
        extra={"client_state": "keep"},
    )  # fmt: skip
    spec = yaml.safe_load(flow.read_text())
    spec["imports"].append(str(tmp_path / "planter.py"))
    flow.write_text(yaml.safe_dump(spec, sort_keys=False))
    home = tmp_path / "home"
    args = ["run", str(flow), "--json"]
    args += ["--simulate"] if mode == "simulate" else ["--node-runner", mode]
    proc = run_cli(args, home, timeout=900)

    result = json.loads(proc.stdout)
    assert result["status"] == "success", errors(result)
    node_side = {home / "nodes", home / "simulated-nodes"}
    central = [p for p in home.iterdir() if p not in node_side]
    assert central, "nothing central to search"
    (tmp_path / "cli-output.txt").write_text(proc.stdout + proc.stderr)
    central.append(tmp_path / "cli-output.txt")
    for form in _forms(MARKER):
        assert find_marker(form, paths=central) == [], form
    # Positive control: the marker is on the nodes, where the state is kept.
    kept = find_marker(MARKER, paths=[p for p in node_side if p.exists()])
    assert any("client_state" in hit for hit in kept), kept
