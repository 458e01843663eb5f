"""Trainable models (``analysis``): logistic regression and a one-hidden-layer MLP.

Both are plain numpy, trained by full-batch gradient descent on the mean binary
cross-entropy, with an optional L2 penalty on the weights (not the biases) and an
optional FedProx proximal term ``(mu / 2) * ||theta - theta_global||²`` over every
parameter (Li et al. 2020), which keeps a node's local training near the round's global
model when the nodes' data differ. Models are saved as JSON: readable, diffable, exact
(Python writes each float64 as the shortest text that reads back to the same bits) and
never pickle, so loading a model cannot run code.

Each model exposes its parameters as a list of numpy arrays (``get_weights`` /
``with_weights``), the ``flowfed.fl`` representation that the aggregation strategies take.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from flowfed.tools import Context, Model, tool
from flowfed.tools.library._common import binary_labels, feature_columns, feature_matrix
from flowfed.tools.library.scaffold import as_lists, control_finish, control_start

Weights = list[np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    return np.asarray(np.exp(-np.logaddexp(0.0, -z)))


def log_loss_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits ``z`` (stable: no log of 0 for confident z)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _as_floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _check_format(data: dict[str, Any], expected: str, path: str | Path) -> None:
    found = data.get("format") if isinstance(data, dict) else None
    if found != expected:
        raise ValueError(f"{path}: expected a {expected!r} model file, found format {found!r}")


class _JsonModel(Model):
    """What the library's models share: one JSON file, and predictions from logits.

    The file holds ``format`` (the class's :attr:`FORMAT`, checked on load), ``features``,
    ``target``, ``training`` (how the model was trained) and the fields of
    :meth:`_params`; :meth:`_from_file` builds the model back from them.
    """

    FORMAT: ClassVar[str]
    file_suffix: ClassVar[str] = ".json"

    def __init__(
        self, features: list[str], *, target: str, training: dict[str, Any] | None
    ) -> None:
        self.features = list(features)
        self.target = target
        self.training = dict(training or {})

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The logits of the rows of a feature matrix (columns in ``features`` order)."""
        raise NotImplementedError

    def decision_function(self, table: pd.DataFrame) -> np.ndarray:
        """The logits of every row."""
        return self.logits(feature_matrix(table, self.features))

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """``P(target = 1)`` for every row of ``table`` (it must have the feature columns)."""
        return sigmoid(self.decision_function(table))

    def predict(self, table: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
        """Predicted class (0/1) of every row."""
        return (self.predict_proba(table) >= threshold).astype(np.int64)

    def _params(self) -> dict[str, Any]:
        """The file's fields particular to this kind of model (its parameters)."""
        raise NotImplementedError

    @classmethod
    def _from_file(cls, data: dict[str, Any], **common: Any) -> Self:
        """The model of a file's ``data``; ``common`` holds ``target`` and ``training``."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The model as JSON (exact float64 round trip): what :meth:`save` writes."""
        data = {
            "format": self.FORMAT,
            "features": self.features,
            "target": self.target,
            "training": self.training,
            **self._params(),
        }
        # json.dumps escapes every non-ASCII character: the text is ASCII, the bytes fixed.
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str | Path = "model") -> Self:
        """Read a model from what :meth:`to_bytes` returned (``where`` names it in errors)."""
        fields = json.loads(data)
        _check_format(fields, cls.FORMAT, where)
        return cls._from_file(fields, target=fields["target"], training=fields.get("training"))

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (exact float64 round trip)."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes(), where=path)


class LogisticRegressionModel(_JsonModel):
    """A binary logistic regression: ``P(target = 1) = sigmoid(x · weights + bias)``."""

    FORMAT: ClassVar[str] = "flowfed.logistic_regression/1"

    def __init__(
        self,
        features: list[str],
        weights: Any,
        bias: float,
        *,
        target: str = "target",
        training: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(features, target=target, training=training)
        self.weights = _as_floats(weights).reshape(-1)
        self.bias = float(bias)
        if self.weights.shape != (len(self.features),):
            raise ValueError(f"{len(self.features)} features but {self.weights.shape[0]} weights")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The logits ``x · weights + bias`` of every row."""
        return np.asarray(x @ self.weights + self.bias)

    def get_weights(self) -> Weights:
        """``[weights, bias]`` as float64 arrays (copies)."""
        return [self.weights.copy(), np.array([self.bias])]

    def with_weights(self, weights: Weights) -> LogisticRegressionModel:
        """The same model with other parameters (e.g. an aggregated global model)."""
        w, b = weights
        return LogisticRegressionModel(
            self.features,
            w,
            float(np.asarray(b).reshape(-1)[0]),
            target=self.target,
            training=self.training,
        )

    def _params(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "bias": self.bias}

    @classmethod
    def _from_file(cls, data: dict[str, Any], **common: Any) -> Self:
        return cls(data["features"], data["weights"], data["bias"], **common)


Activation = Literal["tanh", "relu"]


class MLPModel(_JsonModel):
    """A binary classifier with one hidden layer: ``sigmoid(act(x W1 + b1) · w2 + b2)``."""

    FORMAT: ClassVar[str] = "flowfed.mlp/1"

    def __init__(
        self,
        features: list[str],
        w1: Any,
        b1: Any,
        w2: Any,
        b2: float,
        *,
        activation: Activation = "tanh",
        target: str = "target",
        training: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(features, target=target, training=training)
        self.w1 = _as_floats(w1)
        self.b1 = _as_floats(b1).reshape(-1)
        self.w2 = _as_floats(w2).reshape(-1)
        self.b2 = float(b2)
        self.activation: Activation = activation
        d, h = len(self.features), self.b1.shape[0]
        if self.w1.shape != (d, h) or self.w2.shape != (h,):
            raise ValueError(
                f"inconsistent shapes for {d} features and {h} hidden units: "
                f"w1 {self.w1.shape}, b1 {self.b1.shape}, w2 {self.w2.shape}"
            )
        if activation not in ("tanh", "relu"):
            raise ValueError(f"unknown activation {activation!r} (tanh or relu)")

    @property
    def hidden(self) -> int:
        """Number of hidden units."""
        return int(self.b1.shape[0])

    def _hidden(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = x @ self.w1 + self.b1
        return a, (np.tanh(a) if self.activation == "tanh" else np.maximum(a, 0.0))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The output logits of every row."""
        _, h = self._hidden(x)
        return np.asarray(h @ self.w2 + self.b2)

    def get_weights(self) -> Weights:
        """``[w1, b1, w2, b2]`` as float64 arrays (copies)."""
        return [self.w1.copy(), self.b1.copy(), self.w2.copy(), np.array([self.b2])]

    def with_weights(self, weights: Weights) -> MLPModel:
        """The same architecture with other parameters."""
        w1, b1, w2, b2 = weights
        return MLPModel(
            self.features,
            w1,
            b1,
            w2,
            float(np.asarray(b2).reshape(-1)[0]),
            activation=self.activation,
            target=self.target,
            training=self.training,
        )

    def _params(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "w1": self.w1.tolist(),
            "b1": self.b1.tolist(),
            "w2": self.w2.tolist(),
            "b2": self.b2,
        }

    @classmethod
    def _from_file(cls, data: dict[str, Any], **common: Any) -> Self:
        return cls(
            data["features"],
            np.asarray(data["w1"], dtype=np.float64).reshape(len(data["features"]), -1),
            data["b1"],
            data["w2"],
            data["b2"],
            activation=data["activation"],
            **common,
        )


# ----------------------------------------------------------------------------- training

LossAndGrad = Callable[[Weights], tuple[float, Weights]]


def gradient_descent(
    params: Weights,
    loss_and_grad: LossAndGrad,
    ctx: Context | None,
    *,
    epochs: int,
    learning_rate: float,
    l2: float = 0.0,
    penalized: list[bool] | None = None,
    mu: float = 0.0,
    global_params: Weights | None = None,
    correction: Weights | None = None,
) -> tuple[Weights, list[float]]:
    """Full-batch gradient descent; returns the parameters and the loss of every epoch.

    The objective is ``data_loss + (l2 / 2)·||penalized params||² + (mu / 2)·||params -
    global_params||²``; ``correction`` (SCAFFOLD's ``c - c_i``) is added to every
    step's gradient. The reported loss is the data loss (the cross-entropy, comparable
    across settings of ``l2`` and ``mu``) at the start of each epoch. A non-finite loss
    stops training with an error instead of saving a model full of NaN.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if learning_rate <= 0 or l2 < 0 or mu < 0:
        raise ValueError("learning_rate must be > 0, and l2 and mu >= 0")
    if mu > 0 and global_params is None:
        raise ValueError("mu > 0 (FedProx) needs the round's global model as input")
    penalized = penalized or [True] * len(params)
    params = [p.astype(np.float64, copy=True) for p in params]
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        if ctx is not None:
            ctx.check_cancelled()
        # Overflow is detected below through the loss, with a clearer message than
        # numpy's RuntimeWarnings.
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grads = loss_and_grad(params)
        if not np.isfinite(loss):
            raise ValueError(
                f"training diverged at epoch {epoch} (loss {loss}); lower learning_rate"
            )
        for i, g in enumerate(grads):
            step = g
            if l2 and penalized[i]:
                step = step + l2 * params[i]
            if mu and global_params is not None:
                # The gradient of FedProx's proximal term, as flowfed.fl.fedprox_term
                # computes it (not imported: flowfed.fl pulls in the privacy accountant).
                step = step + mu * (params[i] - global_params[i])
            if correction is not None:
                step = step + correction[i]
            params[i] = params[i] - learning_rate * step
        losses.append(loss)
        if ctx is not None:
            ctx.metric("loss", loss, step=epoch)
            ctx.progress(epoch, epochs, f"epoch {epoch}/{epochs}", unit="epochs")
    return params, losses


def _features_for(
    train: pd.DataFrame, target: str, features: list[str] | None, global_model: Any
) -> list[str]:
    if global_model is None:
        return feature_columns(train, target, features)
    # Federated rounds must line up parameters column by column: the global model's
    # feature order wins, and a different explicit list is a mistake worth stopping on.
    if features is not None and list(features) != list(global_model.features):
        raise ValueError("'features' differ from the global model's features")
    return feature_columns(train, target, list(global_model.features))


def _logistic_loss_and_grad(x: np.ndarray, y: np.ndarray) -> LossAndGrad:
    n = len(y)

    def f(params: Weights) -> tuple[float, Weights]:
        w, b = params
        z = x @ w + b[0]
        dz = (sigmoid(z) - y) / n
        return log_loss_from_logits(z, y), [x.T @ dz, np.array([dz.sum()])]

    return f


@tool(name="flowfed.logistic_regression", version="1.0", type="analysis")
def logistic_regression(
    train: pd.DataFrame,
    ctx: Context,
    global_model: LogisticRegressionModel | None = None,
    *,
    target: str = "target",
    features: list[str] | None = None,
    epochs: int = 200,
    learning_rate: float = 0.1,
    l2: float = 0.0,
    mu: float = 0.0,
    scaffold_c: list[list[float]] | None = None,
) -> LogisticRegressionModel:
    """Fit a binary logistic regression by full-batch gradient descent.

    Features default to every column except ``target`` (which must be 0/1); standardize
    them first, or gradient descent crawls. With the optional ``global_model`` input,
    training starts from its parameters (a federated round) and ``mu > 0`` adds FedProx's
    proximal term towards it. ``scaffold_c`` (set by ``strategy: scaffold``) corrects
    every step with SCAFFOLD's control variates (:mod:`flowfed.tools.library.scaffold`).
    The loss of every epoch is reported as the metric ``loss``, the final training
    accuracy as ``train_accuracy``.
    """
    cols = _features_for(train, target, features, global_model)
    x = feature_matrix(train, cols)
    y = binary_labels(train, target)
    start: Weights = (
        global_model.get_weights()
        if global_model is not None
        else [np.zeros(len(cols)), np.zeros(1)]
    )
    control = None if scaffold_c is None else control_start(ctx, scaffold_c, start)
    params, losses = gradient_descent(
        start,
        _logistic_loss_and_grad(x, y),
        ctx,
        epochs=epochs,
        learning_rate=learning_rate,
        l2=l2,
        penalized=[True, False],
        mu=mu,
        # Without a global model (a federated step's first round), FedProx anchors to the
        # shared starting point every node begins from.
        global_params=global_model.get_weights() if global_model is not None else start,
        correction=control.correction if control is not None else None,
    )
    training = {
        "tool": "flowfed.logistic_regression@1.0",
        "rows": len(y),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "l2": l2,
        "mu": mu,
        "warm_start": global_model is not None,
        "final_loss": losses[-1],
        "initial_loss": losses[0],
    }
    if control is not None:
        delta = control_finish(
            ctx, control, start, params, steps=epochs, learning_rate=learning_rate
        )
        training["control_delta"] = as_lists(delta)
    model = LogisticRegressionModel(cols, params[0], params[1][0], target=target, training=training)
    # From the matrix already built: selecting the columns again costs more than training.
    accuracy = float(np.mean((model.logits(x) >= 0.0) == (y == 1)))
    ctx.metric("train_accuracy", accuracy)
    # Federated rounds weight round metrics by each node's example count.
    ctx.metric("examples", float(len(y)))
    ctx.log(f"trained on {len(y)} rows x {len(cols)} features: loss {losses[-1]:.4f}")
    return model


def _mlp_loss_and_grad(x: np.ndarray, y: np.ndarray, activation: Activation) -> LossAndGrad:
    n = len(y)

    def f(params: Weights) -> tuple[float, Weights]:
        w1, b1, w2, b2 = params
        a = x @ w1 + b1
        h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
        z = h @ w2 + b2[0]
        dz = (sigmoid(z) - y) / n
        dh = np.outer(dz, w2)
        da = dh * (1.0 - h * h) if activation == "tanh" else dh * (a > 0.0)
        grads = [x.T @ da, da.sum(axis=0), h.T @ dz, np.array([dz.sum()])]
        return log_loss_from_logits(z, y), grads

    return f


def mlp_start(
    global_model: MLPModel | None, d: int, hidden: int, activation: Activation, seed: int
) -> tuple[Weights, int, Activation]:
    """Starting parameters: the global model's (its architecture wins), else Glorot-uniform
    weights from ``seed`` and zero biases. Returns ``(params, hidden, activation)``."""
    if global_model is not None:
        return global_model.get_weights(), global_model.hidden, global_model.activation
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    rng = np.random.default_rng(seed)
    lim1, lim2 = np.sqrt(6.0 / (d + hidden)), np.sqrt(6.0 / (hidden + 1))
    start = [
        rng.uniform(-lim1, lim1, (d, hidden)),
        np.zeros(hidden),
        rng.uniform(-lim2, lim2, hidden),
        np.zeros(1),
    ]
    return start, hidden, activation


@tool(name="flowfed.mlp", version="1.0", type="analysis")
def mlp(
    train: pd.DataFrame,
    ctx: Context,
    global_model: MLPModel | None = None,
    *,
    target: str = "target",
    features: list[str] | None = None,
    hidden: int = 16,
    activation: Activation = "tanh",
    epochs: int = 500,
    learning_rate: float = 0.3,
    l2: float = 0.0,
    mu: float = 0.0,
    seed: int = 0,
    scaffold_c: list[list[float]] | None = None,
) -> MLPModel:
    """Fit a one-hidden-layer perceptron for a 0/1 target by full-batch gradient descent.

    Weights start Glorot-uniform from ``seed`` (biases at 0), or from the optional
    ``global_model`` input, whose architecture then wins. ``l2`` penalizes the weight
    matrices, ``mu > 0`` adds FedProx's proximal term, ``scaffold_c`` SCAFFOLD's
    control-variate correction. Reports ``loss`` per epoch and
    ``train_accuracy``.
    """
    cols = _features_for(train, target, features, global_model)
    x = feature_matrix(train, cols)
    y = binary_labels(train, target)
    start, hidden, activation = mlp_start(global_model, len(cols), hidden, activation, seed)
    control = None if scaffold_c is None else control_start(ctx, scaffold_c, start)
    params, losses = gradient_descent(
        start,
        _mlp_loss_and_grad(x, y, activation),
        ctx,
        epochs=epochs,
        learning_rate=learning_rate,
        l2=l2,
        penalized=[True, False, True, False],
        mu=mu,
        # Without a global model (a federated step's first round), FedProx anchors to the
        # shared starting point every node begins from.
        global_params=global_model.get_weights() if global_model is not None else start,
        correction=control.correction if control is not None else None,
    )
    training = {
        "tool": "flowfed.mlp@1.0",
        "rows": len(y),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "hidden": hidden,
        "l2": l2,
        "mu": mu,
        "seed": seed,
        "warm_start": global_model is not None,
        "final_loss": losses[-1],
        "initial_loss": losses[0],
    }
    if control is not None:
        delta = control_finish(
            ctx, control, start, params, steps=epochs, learning_rate=learning_rate
        )
        training["control_delta"] = as_lists(delta)
    model = MLPModel(
        cols,
        params[0],
        params[1],
        params[2],
        params[3][0],
        activation=activation,
        target=target,
        training=training,
    )
    # From the matrix already built: selecting the columns again costs more than training.
    accuracy = float(np.mean((model.logits(x) >= 0.0) == (y == 1)))
    ctx.metric("train_accuracy", accuracy)
    # Federated rounds weight round metrics by each node's example count.
    ctx.metric("examples", float(len(y)))
    ctx.log(f"trained on {len(y)} rows x {len(cols)} features: loss {losses[-1]:.4f}")
    return model
