"""Every trigger file docs/triggers.md shows loads as documented, through the real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Server, stop
from tests.triggers.conftest import Clock, add_flow, launch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "triggers.md"
BLOCKS = re.findall(r"```(yaml|json)\n(.*?)```", DOCS.read_text(), flags=re.S)


def flow_source(name: str) -> str:
    return (
        f"name: {name}\nconfig: {{n: 3, epochs: 1, failed_run: '', model_version: 0, "
        "node: ''}\nsteps:\n  - {name: load, tool: numbers, params: {n: '${config.n}'}, "
        "outputs: [raw]}\n"
    )


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("trigdocs")
    s = launch(root / "srv", f"sqlite:///{root / 'flowfed.db'}", Clock(root / "now"))
    # The stored flows the examples name (breast-cancer-train pinned at version 3).
    for text in (b for _, b in BLOCKS):
        for name in re.findall(r"^flow: ([\w.-]+)", text, flags=re.M):
            add_flow(s, flow_source(name))
    for _ in range(2):
        add_flow(s, flow_source("breast-cancer-train"))
    yield s
    stop(s)


def cli(s: Server, *args: str, check: int | None = 0) -> tuple[str, str]:
    res = s.ff("--server", s.url, "--token", s.token, "triggers", *args, check=check)
    return res.stdout, res.stderr


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_documented_trigger_file_adds(docs_server: Server, index: int) -> None:
    kind, text = BLOCKS[index]
    path = docs_server.root / f"example{index}.{kind}"
    path.write_text(text)
    names = re.findall(r"^name: ([\w.-]+)", text, flags=re.M)
    assert names, "an example names its trigger"
    out, err = cli(docs_server, "add", "-f", path.name)
    assert err == ""
    for name in names:
        assert f"trigger {name} added" in out
    listed = {t["name"]: t for t in json.loads(cli(docs_server, "list", "--json")[0])}
    for name in names:
        spec = listed[name]["spec"]
        # `on:` is the event, never the boolean True.
        assert ("on" in spec) != ("schedule" in spec), spec
    assert len(BLOCKS) >= 2  # the docs still show both forms (one trigger, and `---`)


def test_a_file_with_several_triggers_is_all_or_nothing(docs_server: Server) -> None:
    (docs_server.root / "two.yaml").write_text(
        "name: first-of-two\nflow: evaluate\non: {artifact: {name: x}}\n"
        "---\n"
        "name: second-of-two\nflow: no-such-flow\nschedule: {every: 60}\n"
    )
    _, err = cli(docs_server, "add", "-f", "two.yaml", check=2)
    assert "no stored flow is named 'no-such-flow'" in err
    assert "[red]" not in err and err.startswith("error: ")
    names = {t["name"] for t in json.loads(cli(docs_server, "list", "--json")[0])}
    assert "first-of-two" not in names  # nothing half-written


def test_every_problem_of_every_document_is_named_with_its_line(docs_server: Server) -> None:
    (docs_server.root / "bad.yaml").write_text(
        "name: ok-one\nflow: evaluate\non: {artifact: {name: x}}\n"
        "---\n"
        "name: bad-one\nflow: evaluate\non: {run: {}}\nwhen: 'event.__class__'\n"
        "---\n"
        "name: bad-two\nflow: evaluate\non: {run: {}}\noverlap: sometimes\n"
    )
    _, err = cli(docs_server, "add", "-f", "bad.yaml", check=2)
    assert "bad.yaml:8: when:" in err
    assert "bad.yaml:13: overlap:" in err
    assert "[red]" not in err and "Traceback" not in err


def test_a_trigger_for_an_unknown_flow_is_refused_when_created(docs_server: Server) -> None:
    _, err = cli(
        docs_server, "add", "--name", "typo", "--flow", "evaluat", "--every", "60", check=2
    )
    assert "no stored flow is named 'evaluat'; did you mean 'evaluate'?" in err
    _, err = cli(docs_server, "add", "--name", "v9", "--flow", "evaluate", "--every", "60",
                 "--version", "9", check=2)  # fmt: skip
    assert "flow 'evaluate' has no version 9 (stored: 1)" in err
