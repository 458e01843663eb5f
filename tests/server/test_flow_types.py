"""The server reports type mismatches between steps with the flow's other problems."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_types import TOOLS
from tests.server.conftest import start_server, stop

FLOW = """\
name: typed
steps:
  - {name: load, tool: frame, outputs: [table]}
  - name: sum
    tool: total
    inputs: {xs: table}
    outputs: [scores]
  - {name: other, tool: count, params: {n: 3}, outputs: [n]}
"""


def test_validate_and_create_report_a_type_mismatch_with_the_rest(tmp_path: Path) -> None:
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'flowfed.db'}", tools=TOOLS)
    try:
        api = server.client()
        for path in ("/api/v1/flows/validate", "/api/v1/flows"):
            r = api.post(path, json={"source": FLOW, "format": "yaml"})
            assert r.status_code == 422, r.text
            errors = r.json()["errors"]
            mismatch = next(e for e in errors if e.get("field") == "inputs.xs")
            assert mismatch["step"] == "sum" and mismatch["line"] == 6
            assert "DataFrame" in mismatch["message"] and "is list" in mismatch["message"]
            assert any(e.get("field") == "params.n" for e in errors)
        fixed = FLOW.replace("tool: frame", "tool: ints").replace("params: {n: 3}, ", "")
        ok = api.post("/api/v1/flows/validate", json={"source": fixed, "format": "yaml"})
        assert ok.status_code == 200 and ok.json()["valid"] is True
    finally:
        stop(server)
