"""The start of a flow of built-ins, shared by the tests that run one by the real CLI.

``PREPARE_STEPS`` loads scikit-learn's breast cancer data set, splits it (stratified, seed
0), and standardizes both halves with the training half's statistics, giving the
artifacts ``train`` and ``test``. A test's flow is its header, ``steps:``, these steps and
its own (tests/library/test_flow_e2e.py, tests/models/conftest.py).
"""

from __future__ import annotations

PREPARE_STEPS = """\
  - name: load
    tool: flowfed.sklearn_dataset
    params: {name: breast_cancer}
    outputs: [raw]
  - name: split
    tool: flowfed.train_test_split
    inputs: {table: raw}
    params: {test_fraction: 0.2, stratify: target, seed: 0}
    outputs: {train: train_raw, test: test_raw}
  - name: sums
    tool: flowfed.column_sums
    inputs: {table: train_raw}
    outputs: [sums]
  - name: stats
    tool: flowfed.combine_sums
    inputs: {sums: sums}
    outputs: [stats]
  - name: scale train
    tool: flowfed.standardize
    inputs: {table: train_raw, stats: stats}
    outputs: [train]
  - name: scale test
    tool: flowfed.standardize
    inputs: {table: test_raw, stats: stats}
    outputs: [test]
"""

#: The names of :data:`PREPARE_STEPS`, in order.
PREPARE_STEP_NAMES = ("load", "split", "sums", "stats", "scale train", "scale test")
