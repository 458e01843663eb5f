# Two entry points for a fresh machine: `make demo` (set up + run the main job) and
# `make test` (set up + lint + type-check + run the test suite). Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test-deps demo demo-local test lint bench bench-peers bench-scale bench-fl clean

# compileall: an editable install leaves flowfed's own modules uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) every `flowfed` command would
# compile them again (~30 ms of its start-up); stale .pyc files are simply recompiled.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q src > /dev/null
	touch $(STAMP)

setup: $(STAMP)

# Node agents run tools in a bubblewrap sandbox; the dashboard tests drive chromium. Both
# are installed when make runs as root, else make stops at once with the command to run.
system-deps:
	@scripts/system-deps.sh bwrap:bubblewrap

test-deps:
	@scripts/system-deps.sh bwrap:bubblewrap chromium:chromium

# The main job: the Breast Cancer Detection Flow across three local hospital node agents.
demo: system-deps $(STAMP)
	$(BIN)/flowfed run examples/breast_cancer/flow.yaml

# The small local pipeline of the quick start (no nodes).
demo-local: $(STAMP)
	$(BIN)/flowfed run examples/quickstart/flow.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check src
	$(BIN)/mypy src

test: test-deps lint
	$(BIN)/pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/peers/run.py --write docs/benchmarks.md

# flowfed beside its peers only (each peer in its own venv under .bench-venvs/)
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/peers/run.py --write docs/benchmarks.md

# planning and running 100 / 1,000 / 10,000 tasks
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --write docs/benchmarks.md

# FedAvg on the breast cancer hospitals: flowfed node mode, --simulate and Flower's simulation
# (Flower in its own venv under .bench-venvs/), then --simulate at 10 and 100 nodes
bench-fl: $(STAMP)
	$(BIN)/python benchmarks/fl/run.py --flower-at-scale --repeat 3 --write docs/benchmarks.md

# the main job on sandboxed node agents against in-process ones (needs bubblewrap)
.PHONY: bench-nodes
bench-nodes: $(STAMP)
	$(BIN)/python benchmarks/node_sandbox.py --write docs/benchmarks.md

clean:
	rm -rf $(VENV) .flowfed
