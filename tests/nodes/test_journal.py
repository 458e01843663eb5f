"""The node's journal: hash-chained audit log, task logs, errors, approvals, and the
`flowfed node audit|logs|errors|approvals|approve` commands that read it."""

from __future__ import annotations

import getpass
import itertools
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from flowfed.node.journal import GENESIS, JournalError, NodeJournal, entry_hash


def ff(*args: str, cwd: Path, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "flowfed", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check is not None:
        assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def filled(work: Path, n: int = 5) -> NodeJournal:
    j = NodeJournal(work)
    for i in range(n):
        j.append({"kind": "task.admitted", "task_id": f"t{i}", "tool": "flowfed.csv", "i": i})
    return j


def lines_of(j: NodeJournal) -> list[str]:
    return j.audit_path.read_text().splitlines()


def rewrite(j: NodeJournal, lines: list[str]) -> None:
    j.audit_path.write_text("".join(line + "\n" for line in lines))


# -- the chain -------------------------------------------------------------------------------


def test_chain_links_each_entry_to_the_one_before(tmp_path: Path) -> None:
    j = filled(tmp_path / "node", 4)
    entries = j.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    for e in entries:
        assert e["hash"] == entry_hash(e["seq"], e["ts"], e["prev"], e["event"])
        assert e["ts"].endswith("Z") and e["ts"][10] == "T"
    assert entries[2]["event"] == {"kind": "task.admitted", "task_id": "t2",
                                   "tool": "flowfed.csv", "i": 2}  # fmt: skip
    assert j.verify() == []
    assert j.head() == (4, entries[-1]["hash"])
    # What append returned is what the file holds.
    assert j.append({"kind": "x"}) == j.entries()[-1]


def test_append_refuses_events_it_cannot_chain(tmp_path: Path) -> None:
    j = filled(tmp_path, 1)
    with pytest.raises(JournalError, match="needs a string 'kind'"):
        j.append({"task_id": "t1"})
    with pytest.raises(JournalError, match="audit event 'metric' is not JSON"):
        j.append({"kind": "metric", "value": float("nan")})
    with pytest.raises(JournalError, match="is not JSON"):
        j.append({"kind": "x", "obj": object()})
    assert len(lines_of(j)) == 1 and j.verify() == []


def test_files_are_private(tmp_path: Path) -> None:
    work = tmp_path / "node"
    j = filled(work, 1)
    j.log("t1", "info", "hello")
    j.error("t1", {"message": "boom", "type": "RuntimeError"})
    j.request_approval("principal", "alice", {})
    assert mode(work) == 0o700
    assert mode(work / "logs") == 0o700
    for name in ("audit.jsonl", "errors.jsonl", "approvals.json", "logs/t1.jsonl"):
        assert mode(work / name) == 0o600, name


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        # One byte of an entry's event changed: its hash no longer matches.
        (
            lambda ls: ls.__setitem__(2, ls[2].replace('"task_id":"t2"', '"task_id":"t9"')),
            ["line 3: hash mismatch: the entry (seq 3) was changed after it was written"],
        ),
        # A line deleted: the next one's seq jumps and its link points at nothing.
        (
            lambda ls: ls.pop(2),
            [
                "line 3: seq 4, expected 3 (1 entry missing before it)",
                "line 3: broken link: prev is not the hash of line 2 (seq 2)",
            ],
        ),
        # Two lines swapped.
        (
            lambda ls: ls.insert(1, ls.pop(2)),
            [
                "line 2: seq 3, expected 2 (1 entry missing before it)",
                "line 2: broken link: prev is not the hash of line 1 (seq 1)",
                "line 3: seq 2, expected 4 (out of order)",
                "line 3: broken link: prev is not the hash of line 2 (seq 3)",
                "line 4: broken link: prev is not the hash of line 3 (seq 2)",
            ],
        ),
        # A line copied: its seq is seen twice.
        (
            lambda ls: ls.insert(2, ls[1]),
            [
                "line 3: seq 2 duplicates line 2",
                "line 3: broken link: prev is not the hash of line 2 (seq 2)",
            ],
        ),
        # Not a line of JSON any more.
        (lambda ls: ls.__setitem__(1, ls[1][:-1]), ["line 2: not valid JSON"]),
    ],
    ids=["edited", "deleted", "reordered", "duplicated", "garbled"],
)
def test_verify_names_the_line_of_each_tampering(tmp_path: Path, tamper, expected) -> None:  # type: ignore[no-untyped-def]
    j = filled(tmp_path, 5)
    lines = lines_of(j)
    tamper(lines)
    rewrite(j, lines)
    assert j.verify() == expected


def test_an_entry_rewritten_with_a_fresh_hash_breaks_the_next_link(tmp_path: Path) -> None:
    j = filled(tmp_path, 4)
    lines = lines_of(j)
    entry = json.loads(lines[1])
    entry["event"]["tool"] = "evil.exfiltrate"
    entry["hash"] = entry_hash(entry["seq"], entry["ts"], entry["prev"], entry["event"])
    lines[1] = json.dumps(entry)
    rewrite(j, lines)
    assert j.verify() == ["line 3: broken link: prev is not the hash of line 2 (seq 2)"]


def test_a_truncated_last_line_is_reported_and_the_chain_goes_on_after_it(
    tmp_path: Path,
) -> None:
    j = filled(tmp_path, 4)
    raw = j.audit_path.read_bytes()
    j.audit_path.write_bytes(raw[:-30])  # a crash in the middle of writing entry 4
    assert j.verify() == ["line 4: truncated last line (an interrupted write)"]
    third = j.entries()[-1]
    assert third["seq"] == 3

    # The node restarts: the next entry chains on from the last whole entry, on a new line.
    again = NodeJournal(tmp_path)
    entry = again.append({"kind": "node.started"})
    assert (entry["seq"], entry["prev"]) == (4, third["hash"])
    assert again.verify() == ["line 4: not valid JSON"]
    assert [e["seq"] for e in again.entries()] == [1, 2, 3, 4]


def test_a_restarted_node_continues_the_chain(tmp_path: Path) -> None:
    first = filled(tmp_path, 3)
    head = first.entries()[-1]
    second = NodeJournal(tmp_path)
    entry = second.append({"kind": "node.started", "policy": "ab" * 32})
    assert entry["seq"] == 4 and entry["prev"] == head["hash"]
    # The first instance, still open, sees the other's entry before appending its own.
    after = first.append({"kind": "task.finished", "task_id": "t1"})
    assert after["seq"] == 5 and after["prev"] == entry["hash"]
    assert NodeJournal(tmp_path).verify() == []


def test_threads_and_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    j = NodeJournal(tmp_path)
    other = NodeJournal(tmp_path)  # another instance: only the flock orders it with j
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from flowfed.node.journal import NodeJournal
        j = NodeJournal(Path({str(tmp_path)!r}))
        for i in range(40):
            j.append({{"kind": "proc", "i": i}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])

    def work(journal: NodeJournal, name: str) -> None:
        for i in range(40):
            journal.append({"kind": "thread", "who": name, "i": i})

    threads = [
        threading.Thread(target=work, args=(j if n % 2 else other, f"w{n}")) for n in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=60) == 0
    entries = j.entries()
    assert len(entries) == 6 * 40 + 40
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert j.verify() == []
    assert sorted(e["event"]["i"] for e in entries if e["event"]["kind"] == "proc") == list(
        range(40)
    )


# -- logs and errors -------------------------------------------------------------------------


def test_task_logs_stay_per_task(tmp_path: Path) -> None:
    j = NodeJournal(tmp_path)
    j.log("t1", "info", "read 569 rows", run_id="r1", step="load")
    j.log("t1", "critical", "odd level")
    j.log("t2", "warning", "other task")
    got = j.logs("t1")
    assert [(x["level"], x["message"]) for x in got] == [("info", "read 569 rows"),
                                                         ("info", "odd level")]  # fmt: skip
    assert got[0]["run_id"] == "r1" and got[0]["step"] == "load" and got[0]["ts"]
    assert j.logs("t3") == []


@pytest.mark.parametrize(
    "hostile", ["../escape", "a/b", ".hidden", "..", "", "x" * 200, "a\x00b", "/etc/passwd"]
)
def test_hostile_task_ids_cannot_leave_the_logs_folder(tmp_path: Path, hostile: str) -> None:
    work = tmp_path / "node"
    j = NodeJournal(work)
    with pytest.raises(JournalError, match="is not a safe name"):
        j.log(hostile, "info", "pwned")
    with pytest.raises(JournalError, match="is not a safe name"):
        j.logs(hostile)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["node"]


def test_errors_keep_the_full_report_under_an_id(tmp_path: Path) -> None:
    j = NodeJournal(tmp_path)
    first = j.error("t1", {"message": "bad column 'age'\nsecond line", "type": "KeyError",
                           "traceback": "Traceback (most recent call last):\n  ...\nKeyError",
                           "context": {"step": "train", "tool": "x.fit"}})  # fmt: skip
    second = j.error("t2", {"message": "boom", "type": "RuntimeError"})
    assert first != second and first.startswith("err-") and len(first) == 16
    assert j.errors() == [
        {"id": first, "ts": j.errors()[0]["ts"], "task_id": "t1", "type": "KeyError",
         "message": "bad column 'age'"},
        {"id": second, "ts": j.errors()[1]["ts"], "task_id": "t2", "type": "RuntimeError",
         "message": "boom"},
    ]  # fmt: skip
    full = j.get_error(first)
    assert full is not None
    assert full["message"] == "bad column 'age'\nsecond line"
    assert full["traceback"].endswith("KeyError") and full["context"]["tool"] == "x.fit"
    assert j.get_error("err-000000000000") is None and j.get_error("../x") is None


# -- approvals -------------------------------------------------------------------------------


def test_approvals_flow_from_the_cli_to_a_running_journal(tmp_path: Path) -> None:
    j = NodeJournal(tmp_path)
    key = "flowfed.csv@1.0#" + "c0de" * 16
    rid = j.request_approval("tool", key, {"principal": "alice", "task_id": "t1"})
    assert j.request_approval("tool", key, {"principal": "bob"}) == rid  # idempotent
    pid = j.request_approval("principal", "alice", {"flow": "breast"})
    assert not j.is_approved("tool", key)
    assert [p["id"] for p in j.pending()] == [rid, pid]
    assert mode(j.approvals_path) == 0o600

    listed = json.loads(ff("node", "approvals", "--json", "--work-dir", str(tmp_path),
                           cwd=tmp_path).stdout)  # fmt: skip
    assert [p["key"] for p in listed["pending"]] == [key, "alice"] and listed["approved"] == []
    table = ff("node", "approvals", "--work-dir", str(tmp_path), cwd=tmp_path).stdout
    assert rid in table and pid in table and "2 pending" in table

    res = ff("node", "approve", rid, "--by", "dr-house", "--work-dir", str(tmp_path), cwd=tmp_path)
    assert f"approved tool {key} ({rid}) by dr-house" in res.stdout
    # The instance that asked (the agent) sees the other process's approval.
    assert j.is_approved("tool", key)
    assert not j.is_approved("principal", "alice")
    ff("node", "approve", "alice", "--work-dir", str(tmp_path), cwd=tmp_path)  # by key
    assert j.is_approved("principal", "alice") and j.pending() == []
    # Without --by the approver is the operator's user name.
    assert [a["by"] for a in j.approved()] == ["dr-house", getpass.getuser()]

    kinds = [(e["event"]["kind"], e["event"].get("key")) for e in j.entries()]
    assert kinds == [("approval.requested", key), ("approval.requested", "alice"),
                     ("approval.granted", key), ("approval.granted", "alice")]  # fmt: skip
    assert j.entries()[2]["event"]["by"] == "dr-house"
    # The agent's next entry chains on from the CLI's.
    j.append({"kind": "task.admitted", "task_id": "t1"})
    assert j.verify() == []

    bad = ff("node", "approve", "apr-nope", "--work-dir", str(tmp_path), cwd=tmp_path, check=2)
    assert "no approval request 'apr-nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_approve_all_and_approving_twice(tmp_path: Path) -> None:
    j = NodeJournal(tmp_path)
    ids = [j.request_approval("principal", name, {}) for name in ("a", "b", "c")]
    ff("node", "approve", "--work-dir", str(tmp_path), cwd=tmp_path, check=2)
    res = ff("node", "approve", "--all", "--work-dir", str(tmp_path), cwd=tmp_path)
    assert [line.split("(")[1].split(")")[0] for line in res.stdout.splitlines()] == ids
    assert all(j.is_approved("principal", n) for n in ("a", "b", "c"))
    assert j.approve(ids[0])["status"] == "approved"
    assert len(j.entries()) == 6  # approving again wrote nothing
    with pytest.raises(JournalError, match="no approval request 'zzz'"):
        j.approve("zzz")
    with pytest.raises(JournalError, match="'tool' or 'principal'"):
        j.request_approval("dataset", "x", {})


# -- the commands ----------------------------------------------------------------------------


def agent_like(work: Path) -> tuple[NodeJournal, str]:
    j = NodeJournal(work)
    j.append({"kind": "node.started", "node": "hospital-a", "policy": "ab" * 32,
              "runner": "inprocess", "datasets": {"breast": "cd" * 32}})  # fmt: skip
    j.append({"kind": "task.admitted", "task_id": "t1", "run_id": "r1", "principal": "alice",
              "flow": "breast [demo]", "tool": "flowfed.csv", "tool_version": "1.0"})  # fmt: skip
    j.append({"kind": "egress.refused", "task_id": "t1", "output": "table",
              "rule": "egress.row_shaped", "reason": "row-shaped outputs never leave"})  # fmt: skip
    tb = "Traceback (most recent call last):\nRuntimeError: boom"
    eid = j.error("t1", {"message": "boom", "type": "RuntimeError", "traceback": tb})
    j.append({"kind": "task.failed", "task_id": "t1", "error_id": eid, "type": "RuntimeError"})
    j.append({"kind": "task.admitted", "task_id": "t2", "principal": "bob", "tool": "x"})
    j.log("t1", "warning", "missing values in [age]")
    return j, eid


def test_node_audit_shows_and_verifies_the_log(tmp_path: Path) -> None:
    work = tmp_path / "node"
    j, eid = agent_like(work)
    w = ("--work-dir", str(work))

    table = ff("node", "audit", *w, cwd=tmp_path).stdout
    for text in ("node.started", "task.admitted", "egress.refused", "task.failed", eid,
                 "flowfed.csv@1.0 by alice", "breast [demo]"):  # fmt: skip
        assert text in table, text

    as_json = [json.loads(x) for x in ff("node", "audit", "--json", *w, cwd=tmp_path).stdout
               .splitlines()]  # fmt: skip
    assert as_json == j.entries()
    only = ff("node", "audit", "--json", "--task", "t1", *w, cwd=tmp_path).stdout.splitlines()
    assert [json.loads(x)["seq"] for x in only] == [2, 3, 4]

    ok = ff("node", "audit", "--verify", *w, cwd=tmp_path)
    assert ok.stdout.startswith("audit chain intact: 5 entries")
    report = json.loads(ff("node", "audit", "--verify", "--json", *w, cwd=tmp_path).stdout)
    assert report == {"ok": True, "entries": 5, "head": j.head()[1], "problems": []}

    lines = lines_of(j)
    lines[3] = lines[3].replace("RuntimeError", "ValueError")
    rewrite(j, lines)
    broken = ff("node", "audit", "--verify", *w, cwd=tmp_path, check=1)
    assert "line 4: hash mismatch" in broken.stdout and "audit chain BROKEN" in broken.stdout
    report = json.loads(ff("node", "audit", "--verify", "--json", *w, cwd=tmp_path,
                           check=1).stdout)  # fmt: skip
    assert report["ok"] is False and report["problems"][0].startswith("line 4: ")

    # A line that is not an entry at all: the table still shows the others, verify names it.
    with j.audit_path.open("a") as f:
        f.write('{"note": "appended by hand"}\n')
    assert "task.admitted" in ff("node", "audit", *w, cwd=tmp_path).stdout
    broken = ff("node", "audit", "--verify", *w, cwd=tmp_path, check=1).stdout
    assert "line 6: not an audit entry (no 'seq')" in broken


def test_node_logs_and_errors(tmp_path: Path) -> None:
    work = tmp_path / "node"
    _, eid = agent_like(work)
    w = ("--work-dir", str(work))

    logs = ff("node", "logs", "t1", *w, cwd=tmp_path).stdout
    assert "WARNING" in logs and "missing values in [age]" in logs
    as_json = json.loads(ff("node", "logs", "t1", "--json", *w, cwd=tmp_path).stdout)
    assert as_json["message"] == "missing values in [age]"
    none = ff("node", "logs", "t2", *w, cwd=tmp_path, check=2)
    assert none.stderr.strip() == f"error: no logs of task t2 in {work / 'logs'}"
    hostile = ff("node", "logs", "../../etc/passwd", *w, cwd=tmp_path, check=2)
    assert "is not a safe name" in hostile.stderr and "Traceback" not in hostile.stderr

    listing = ff("node", "errors", *w, cwd=tmp_path).stdout
    assert eid in listing and "RuntimeError" in listing
    one = ff("node", "errors", eid, *w, cwd=tmp_path).stdout
    assert "RuntimeError: boom" in one and "Traceback (most recent call last):" in one
    assert json.loads(ff("node", "errors", eid, "--json", *w, cwd=tmp_path).stdout)["id"] == eid
    summaries = ff("node", "errors", "--json", *w, cwd=tmp_path).stdout.splitlines()
    assert [json.loads(x)["id"] for x in summaries] == [eid]
    unknown = ff("node", "errors", "err-000000000000", *w, cwd=tmp_path, check=2)
    assert "no error err-000000000000" in unknown.stderr


def test_commands_on_a_missing_or_empty_work_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for args in (["audit"], ["audit", "--verify"], ["logs", "t1"], ["errors"], ["approvals"],
                 ["approve", "--all"]):  # fmt: skip
        res = ff("node", *args, "--work-dir", str(missing), cwd=tmp_path, check=2)
        assert res.stderr.strip() == (
            f"error: no node work directory at {missing} (give --work-dir, the one "
            "`flowfed node start` uses)"
        ), args
    assert not missing.exists()  # reading never creates the node's folder

    empty = tmp_path / "empty"
    empty.mkdir()
    w = ("--work-dir", str(empty))
    assert ff("node", "audit", *w, cwd=tmp_path).stdout.strip() == "no audit entries"
    assert ff("node", "audit", "--verify", *w, cwd=tmp_path).stdout.strip() == "no audit entries"
    assert ff("node", "errors", *w, cwd=tmp_path).stdout.strip() == "no errors kept on this node"
    assert ff("node", "approvals", *w, cwd=tmp_path).stdout.strip() == "no approval requests"

    # The default is .flowfed-node in the current folder, as for `node start`.
    agent_like(tmp_path / ".flowfed-node")
    assert "audit chain intact" in ff("node", "audit", "--verify", cwd=tmp_path).stdout
    assert os.path.exists(tmp_path / ".flowfed-node" / "audit.jsonl")


def test_the_documented_verifier_agrees_with_verify(tmp_path: Path) -> None:
    # docs/node-audit.md shows how to check the chain without flowfed: run that code.
    doc = (Path(__file__).parents[2] / "docs" / "node-audit.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```python\n")[1:]]
    (code,) = [b for b in blocks if "def entry_hash" in b]
    j, _ = agent_like(tmp_path / ".flowfed-node")
    script = tmp_path / "check.py"
    script.write_text(code)
    run = [sys.executable, str(script)]
    ok = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == f"intact, head {j.head()[1]}"
    lines = lines_of(j)
    lines[1] = lines[1].replace("alice", "mallory")
    rewrite(j, lines)
    bad = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "line 2: edited" in bad.stderr
