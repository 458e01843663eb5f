"""``flowfed triggers`` end to end against a real server, as a user types it."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.polling import wait_for
from tests.server.conftest import Server
from tests.triggers.conftest import Clock, add_flow

WEEKLY = """\
name: weekly-retrain
description: re-train the breast cancer model every Monday at 02:00 Berlin time
flow: retrain
params: {n: 4}
schedule:
  cron: "0 2 * * 1"
  timezone: Europe/Berlin
catchup: true
overlap: skip
"""


def cli(s: Server, *args: str, check: int | None = 0) -> tuple[str, str]:
    res = s.ff("--server", s.url, "--token", s.token, "triggers", *args, check=check)
    return res.stdout, res.stderr


def listed(s: Server) -> dict[str, dict]:
    out, _ = cli(s, "list", "--json")
    return {t["name"]: t for t in json.loads(out)}


def test_add_list_disable_enable_fire_history_and_remove(tserver: tuple[Server, Clock]) -> None:
    s, clock = tserver
    add_flow(
        s,
        "name: retrain\nconfig: {n: 3}\nsteps:\n"
        "  - {name: load, tool: numbers, params: {n: '${config.n}'}, outputs: [raw]}\n",
    )
    (s.root / "weekly.yaml").write_text(WEEKLY)
    out, _ = cli(s, "add", "-f", "weekly.yaml")
    assert "trigger weekly-retrain added (cron → flow retrain, next fire" in out
    shown = listed(s)["weekly-retrain"]
    assert shown["kind"] == "cron" and shown["enabled"] is True
    due = shown["next_fire_at"]
    berlin = datetime.fromtimestamp(due, ZoneInfo("Europe/Berlin"))
    assert (berlin.weekday(), berlin.hour, berlin.minute) == (0, 2, 0)
    table, _ = cli(s, "list")
    assert "weekly-retrain" in table and "retrain" in table

    out, _ = cli(s, "disable", "weekly-retrain")
    assert "disabled" in out
    assert listed(s)["weekly-retrain"]["enabled"] is False
    assert listed(s)["weekly-retrain"]["next_fire_at"] is None
    cli(s, "enable", "weekly-retrain")

    clock.set(due + 0.5)
    wait_for(
        "the Monday tick",
        lambda: [
            f
            for f in json.loads(cli(s, "history", "weekly-retrain", "--json")[0])
            if f["status"] == "started"
        ],
    )
    fires = json.loads(cli(s, "history", "weekly-retrain", "--json")[0])
    assert len(fires) == 1 and fires[0]["scheduled_for"] == due
    assert s.wait_run(fires[0]["run_id"])["params"] == {"n": 4}
    table, _ = cli(s, "history", "weekly-retrain")
    assert "started" in table
    assert listed(s)["weekly-retrain"]["last_run_id"] == fires[0]["run_id"]

    out, _ = cli(s, "remove", "weekly-retrain")
    assert "removed" in out
    assert "weekly-retrain" not in listed(s)
    _, err = cli(s, "history", "weekly-retrain", check=2)
    assert "no trigger named 'weekly-retrain'" in err


def test_add_from_options(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    out, _ = cli(
        s,
        "add",
        "--name",
        "fallback-opt",
        "--flow",
        "fb",
        "--on-run",
        "etl*",
        "--status",
        "failed",
        "--status",
        "cancelled",
        "-p",
        "n=2",
    )
    assert "trigger fallback-opt added (event → flow fb)" in out
    spec = listed(s)["fallback-opt"]["spec"]
    assert spec["on"] == {"run": {"flow": "etl*", "status": ["failed", "cancelled"]}}
    assert spec["params"] == {"n": 2}
    out, _ = cli(s, "add", "--name", "quarter-hour", "--flow", "fb", "--every", "15m")
    assert "(interval → flow fb" in out


def test_a_bad_trigger_file_names_file_line_and_field(tserver: tuple[Server, Clock]) -> None:
    s, _ = tserver
    (s.root / "bad.yaml").write_text(
        "name: bad\nflow: f\nschedule:\n  cron: '61 * * * *'\noverlap: sometimes\n"
    )
    _, err = cli(s, "add", "-f", "bad.yaml", check=2)
    assert "bad.yaml:4: schedule.cron: invalid cron expression '61 * * * *'" in err
    assert "bad.yaml:5: overlap:" in err
    assert "Traceback" not in err
    (s.root / "broken.yaml").write_text("name: x\nflow: [unclosed\n")
    _, err = cli(s, "add", "-f", "broken.yaml", check=2)
    assert "broken.yaml:" in err and "invalid YAML" in err  # as for flow files
    (s.root / "unsafe.yaml").write_text(
        "name: unsafe\nflow: f\non: {run: {}}\nwhen: \"__import__('os').system('true')\"\n"
    )
    _, err = cli(s, "add", "-f", "unsafe.yaml", check=2)
    assert "unsafe.yaml:4: when:" in err


def test_duplicate_names_missing_server_and_bad_options_are_one_line_errors(
    tserver: tuple[Server, Clock],
) -> None:
    s, _ = tserver
    cli(s, "add", "--name", "dup", "--flow", "f", "--every", "60")
    _, err = cli(s, "add", "--name", "dup", "--flow", "f", "--every", "60", check=2)
    assert "HTTP 409: a trigger named 'dup' exists already" in err
    _, err = cli(s, "add", "--name", "o", "--flow", "f", "--every", "60", "--overlap", "x", check=2)
    assert "overlap:" in err
    res = s.ff("triggers", "list", check=2)
    assert "pass --server URL" in res.stderr
    _, err = cli(s, "enable", "nope", check=2)
    assert "HTTP 404: no trigger named 'nope'" in err
