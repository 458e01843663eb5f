"""flowfed's built-in tools, all named ``flowfed.<name>`` (see docs/tools.md).

Importing this package registers every one of them: ``flowfed run flow.yaml --import
flowfed.tools.library``, or ``imports: [flowfed.tools.library]`` in a flow file.

- database-adapter: ``flowfed.csv``, ``flowfed.parquet``, ``flowfed.sql_table``,
  ``flowfed.sklearn_dataset``
- preprocessing: ``flowfed.impute``, ``flowfed.standardize``
- data-transformation: ``flowfed.train_test_split``, ``flowfed.partition``, ``flowfed.column_sums``,
  ``flowfed.combine_sums``, ``flowfed.package_model``, and the secure-aggregation tools
  ``flowfed.secagg_keys``, ``flowfed.secagg_mask``, ``flowfed.secagg_reveal``
- analysis: ``flowfed.logistic_regression``, ``flowfed.mlp``, ``flowfed.torch_mlp`` (PyTorch)
- evaluation: ``flowfed.evaluate_classifier``, ``flowfed.fl_evaluate`` (and
  ``flowfed.fl_eval_mask`` for secure federated evaluation)
"""

import flowfed.tools.library.federated  # noqa: F401  (registers the secure-aggregation tools)
from flowfed.tools.library import (
    adapters,
    evaluation,
    fl_evaluation,
    models,
    packaging,
    partition,
    preprocessing,
    torch_adapter,
    torch_models,
    transform,
)
from flowfed.tools.library.models import LogisticRegressionModel, MLPModel
from flowfed.tools.library.transform import Split

__all__ = [
    "LogisticRegressionModel",
    "MLPModel",
    "Split",
    "adapters",
    "evaluation",
    "fl_evaluation",
    "models",
    "packaging",
    "partition",
    "preprocessing",
    "torch_adapter",
    "torch_models",
    "transform",
]
