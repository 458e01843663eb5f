"""The flow loader parses with libyaml when PyYAML has it: same values, same line numbers."""

from __future__ import annotations

import pytest
import yaml

from flowfed.spec import loader
from flowfed.spec.diagnostics import FlowError

TRICKY = """
name: "tricky"
a: yes
b: off
c: 0o17
d: 017
e: 1_000
f: 1e3
g: .inf
h: ~
i: 2024-01-02
j: "2024-01-02"
k: &anc {x: 1, y: [1, 2.5, null, true]}
l: *anc
m: |
  multi
  line
n: >-
  folded
  text
o: 0x1F
p: '00123'
q: -.5
r: 12:30:00
s: !!str 123
on: {nodes: [hospital-a]}
steps:
  - {name: a, tool: t, params: {x: 1}}
  - name: b
    tool: t
"""


def test_libyaml_is_what_flows_are_parsed_with() -> None:
    # PyYAML's wheels ship libyaml; without it the loader falls back to the pure parser.
    assert yaml.__with_libyaml__ and loader._PARSER is yaml.CSafeLoader


def test_both_parsers_give_the_same_values_and_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for parser in (loader._Loader, yaml.CSafeLoader):
        monkeypatch.setattr(loader, "_PARSER", parser)
        results.append(loader._compose(TRICKY, "flow.yaml"))
    (data_py, lines_py), (data_c, lines_c) = results
    assert data_c == data_py and lines_c == lines_py
    assert [type(v) for v in data_c.values()] == [type(v) for v in data_py.values()]
    # `on:` stays the placement key, and line numbers point at the text.
    assert data_c["on"] == {"nodes": ["hospital-a"]}
    assert lines_c[("steps", 1, "tool")] == 30


def test_duplicate_keys_and_bad_yaml_are_located_with_libyaml() -> None:
    with pytest.raises(FlowError) as dup:
        loader._compose("name: a\nsteps: []\nname: b\n", "flow.yaml")
    assert [(d.message, d.line) for d in dup.value.diagnostics] == [("duplicate key 'name'", 3)]
    with pytest.raises(FlowError) as bad:
        loader._compose("name: x\nsteps:\n  - name: a\n    tool: [unclosed\n", "flow.yaml")
    (d,) = bad.value.diagnostics
    assert d.message.startswith("invalid YAML: ") and d.line == 5
