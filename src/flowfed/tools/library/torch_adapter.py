"""Any PyTorch ``nn.Module`` in a federated step: one adapter, state dict in, state dict out.

:func:`train_module` trains a module on a table and returns a :class:`TorchModel`, which
carries the module's ``state_dict`` as numpy arrays (``get_weights`` / ``with_weights``
in ``state_dict`` order), so every strategy, secure aggregation and DP treat it like the
built-in models. A round's global model comes in as ``global_model``; its state dict is
loaded into a fresh module before local training (state dict in), and the trained
module's state dict goes back out. ``flowfed.torch_module`` is the same as a tool: name
the module class by import path in the flow (``module: digits_cnn:SmallCNN``; a tools
file's folder is importable).

The module maps a float32 batch ``(rows, *input_shape)`` to logits ``(rows, classes)``
(cross-entropy; labels ``0..classes-1``) or ``(rows, 1)`` (binary, logistic loss).
PyTorch is imported when a model is trained or used, never when the library loads.

>>> # in a tools file next to the flow:
>>> # class SmallCNN(torch.nn.Module): ...
>>> # steps: - {name: Train, kind: federated, tool: flowfed.torch_module,
>>> #           params: {module: "digits_cnn:SmallCNN", input_shape: [1, 8, 8]}, ...}
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from flowfed.tools import Context, Model, tool

__all__ = ["TorchModel", "resolve_module", "torch_module", "train_module"]


def _torch(who: str = "the PyTorch adapter") -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError(
            f"{who} needs PyTorch: pip install torch (the CPU wheel is enough)"
        ) from None
    return torch


def local_steps(
    params: list[Any], *, optimizer: str, learning_rate: float, mu: float
) -> tuple[Any, Any]:
    """The optimizer over ``params`` and FedProx's term for them, shared by the trainers.

    Returns ``(opt, proximal)``: ``proximal()`` is ``(mu/2)·||w - w_start||²`` against the
    parameters as they are now (the round's global model), or 0 when ``mu`` is 0.
    """
    torch = _torch()
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    anchor = [p.detach().clone() for p in params]
    opt = (torch.optim.SGD(params, lr=learning_rate) if optimizer == "sgd"
           else torch.optim.Adam(params, lr=learning_rate))  # fmt: skip

    def proximal() -> Any:
        if not mu:
            return 0.0
        return (mu / 2) * sum((p - a).pow(2).sum() for p, a in zip(params, anchor, strict=True))

    return opt, proximal


def finite_loss(value: float, epoch: int) -> float:
    """``value``, or a clear error when training diverged at ``epoch``."""
    if not np.isfinite(value):
        raise ValueError(f"training diverged at epoch {epoch} (loss {value}); lower learning_rate")
    return value


def resolve_module(ref: str) -> Any:
    """The class (or factory) named ``module.path:Name``; ``file_stem:Name`` finds a
    tools file the flow imported.

    >>> resolve_module("collections:OrderedDict").__name__
    'OrderedDict'
    """
    name, sep, attr = ref.partition(":")
    if not sep or not name or not attr:
        raise ValueError(f"module must be 'import.path:ClassName', got {ref!r}")
    # A flow's tools file (imports: [digits_cnn.py]) is loaded under a private module
    # name; importing it again under its plain name would run its @tool registrations
    # twice, so the loaded copy is used.
    loaded = [m for key, m in sys.modules.items() if key.startswith(f"flowfed_tools_{name}_")]
    try:
        mod = sys.modules.get(name) or (loaded[0] if loaded else importlib.import_module(name))
    except ImportError as exc:
        raise ValueError(f"cannot import {name!r} for module {ref!r}: {exc}") from None
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{name!r} has no {attr!r} (module {ref!r})")
    return obj


class TorchModel(Model):
    """A trained ``nn.Module`` as flowfed sees it: a reference to its class, the
    constructor's keyword arguments and its ``state_dict`` (numpy, in order).

    ``predict_proba`` gives ``P(class 1)`` for a binary module and the class
    probabilities ``(rows, classes)`` otherwise; ``predict`` the class of each row.
    Saved as one ``.npz`` file (the arrays plus a JSON header).
    """

    FORMAT: ClassVar[str] = "flowfed.torch_module/1"
    file_suffix: ClassVar[str] = ".npz"

    def __init__(
        self,
        module: str,
        state: dict[str, np.ndarray],
        *,
        module_kwargs: dict[str, Any] | None = None,
        features: list[str],
        target: str,
        input_shape: list[int] | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.module_kwargs = dict(module_kwargs or {})
        self.state = dict(state)
        self.features = list(features)
        self.target = target
        self.input_shape = list(input_shape) if input_shape else None
        self.training = dict(training or {})

    # -- federated interface ---------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """The state dict's tensors, in ``state_dict`` order."""
        return [np.asarray(v) for v in self.state.values()]

    def with_weights(self, weights: list[np.ndarray]) -> TorchModel:
        """The same module with these tensors (cast back to each tensor's own dtype)."""
        if len(weights) != len(self.state):
            raise ValueError(f"{len(weights)} tensors for a state dict of {len(self.state)}")
        state = {
            k: np.asarray(w).astype(v.dtype, copy=False).reshape(v.shape)
            for (k, v), w in zip(self.state.items(), weights, strict=True)
        }
        return TorchModel(
            self.module, state, module_kwargs=self.module_kwargs, features=self.features,
            target=self.target, input_shape=self.input_shape, training=dict(self.training),
        )  # fmt: skip

    # -- using it ----------------------------------------------------------------------------

    def build(self) -> Any:
        """A fresh ``nn.Module`` holding this state dict (state dict in)."""
        torch = _torch()
        net = resolve_module(self.module)(**self.module_kwargs)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()})
        return net

    def _inputs(self, table: pd.DataFrame) -> Any:
        torch = _torch()
        from flowfed.tools.library._common import feature_matrix

        x = feature_matrix(table, self.features).astype(np.float32)
        if self.input_shape:
            x = x.reshape(len(x), *self.input_shape)
        return torch.from_numpy(x)

    def logits(self, table: pd.DataFrame) -> np.ndarray:
        """The module's outputs for every row."""
        torch = _torch()
        net = self.build().eval()
        with torch.no_grad():
            return np.asarray(net(self._inputs(table)).double().numpy())

    def decision_function(self, table: pd.DataFrame) -> np.ndarray:
        """Binary modules: the logit of class 1 per row."""
        z = self.logits(table)
        if z.shape[1] == 1:
            return z[:, 0]
        if z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        raise ValueError(f"decision_function is for binary modules; this one has {z.shape[1]}")

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """``P(class 1)`` (binary) or class probabilities ``(rows, classes)``."""
        z = self.logits(table)
        if z.shape[1] == 1:
            return 1.0 / (1.0 + np.exp(-z[:, 0]))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return p[:, 1] if z.shape[1] == 2 else p

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """The predicted class of every row."""
        z = self.logits(table)
        return (z[:, 0] >= 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)

    # -- persistence -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The ``.npz`` that :meth:`save` writes: tensors ``t0..tN`` and a JSON header."""
        header = {
            "format": self.FORMAT, "module": self.module, "module_kwargs": self.module_kwargs,
            "keys": list(self.state), "features": self.features, "target": self.target,
            "input_shape": self.input_shape, "training": self.training,
        }  # fmt: skip
        arrays = {f"t{i}": np.asarray(v) for i, v in enumerate(self.state.values())}
        buf = io.BytesIO()
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str | Path = "model") -> Self:
        """Read what :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") != cls.FORMAT:
                raise ValueError(f"{where}: not a {cls.FORMAT} file")
            state = {k: z[f"t{i}"] for i, k in enumerate(header["keys"])}
        return cls(
            header["module"], state, module_kwargs=header["module_kwargs"],
            features=header["features"], target=header["target"],
            input_shape=header["input_shape"], training=header["training"],
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        """Write the model as one ``.npz`` file."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes(), where=path)


def train_module(
    module: str,
    train: pd.DataFrame,
    ctx: Context,
    global_model: TorchModel | None = None,
    *,
    module_kwargs: dict[str, Any] | None = None,
    target: str = "target",
    features: list[str] | None = None,
    input_shape: list[int] | None = None,
    epochs: int = 1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    optimizer: str = "sgd",
    mu: float = 0.0,
    seed: int = 0,
    threads: int | None = 1,
) -> TorchModel:
    """Train ``module`` (``import.path:Class``) on ``train``; the adapter's one function.

    Starts from ``global_model``'s state dict when given (a federated round), else from
    the module's own initialization under ``torch.manual_seed(seed)`` (every node the
    same start). Mini-batch SGD or Adam, ``epochs`` passes over the rows in a seeded
    order; ``mu > 0`` adds FedProx's ``(mu/2)·||w - w_global||²``. Reports ``loss`` per
    epoch (the mean batch loss), ``train_accuracy`` and ``examples``. ``threads`` sets
    PyTorch's intra-op threads for the process (1 by default: small models on a shared
    machine lose far more to spinning threads than they gain, measured 24 s vs 0.4 s per
    local round of the digits example on 2 busy cores; None leaves PyTorch's setting).
    """
    torch = _torch()
    if threads is not None:
        torch.set_num_threads(threads)
    if epochs < 1 or learning_rate <= 0 or batch_size < 1 or mu < 0:
        raise ValueError("epochs and batch_size must be >= 1, learning_rate > 0, mu >= 0")
    if global_model is not None:
        cols = list(global_model.features)
        module, module_kwargs = global_model.module, global_model.module_kwargs
        input_shape = global_model.input_shape
    else:
        cols = features or [c for c in train.columns if c != target]
    torch.manual_seed(seed)
    net = resolve_module(module)(**(module_kwargs or {}))
    if global_model is not None:
        net.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in global_model.state.items()}
        )
    shell = TorchModel(module, {}, module_kwargs=module_kwargs, features=cols, target=target,
                       input_shape=input_shape)  # fmt: skip
    x = shell._inputs(train)
    if target not in train.columns:
        raise ValueError(f"the table has no target column {target!r}")
    y = torch.from_numpy(train[target].to_numpy().astype(np.int64))
    opt, proximal = local_steps(
        list(net.parameters()), optimizer=optimizer, learning_rate=learning_rate, mu=mu
    )
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    net.train()
    for epoch in range(1, epochs + 1):
        ctx.check_cancelled()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            out = net(x[idx])
            if out.shape[1] == 1:
                data_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    out[:, 0], y[idx].float()
                )
            else:
                data_loss = torch.nn.functional.cross_entropy(out, y[idx])
            loss = data_loss + proximal()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(data_loss.detach()) * len(idx)
        value = finite_loss(total / len(y), epoch)
        losses.append(value)
        ctx.metric("loss", value, step=epoch)
        ctx.progress(epoch, epochs, f"epoch {epoch}/{epochs}", unit="epochs")
    state = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    training = {
        "tool": "flowfed.torch_module@1.0", "module": module,
        "framework": f"torch {torch.__version__}",
        "rows": len(y), "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
        "optimizer": optimizer, "mu": mu, "seed": seed, "warm_start": global_model is not None,
        "initial_loss": losses[0], "final_loss": losses[-1],
    }  # fmt: skip
    model = TorchModel(module, state, module_kwargs=module_kwargs, features=cols, target=target,
                       input_shape=input_shape, training=training)  # fmt: skip
    accuracy = float(np.mean(model.predict(train) == y.numpy()))
    ctx.metric("train_accuracy", accuracy)
    ctx.metric("examples", float(len(y)))
    ctx.log(f"trained {module} on {len(y)} rows: loss {losses[-1]:.4f}")
    return model


@tool(name="flowfed.torch_module", version="1.0", type="analysis")
def torch_module(
    train: pd.DataFrame,
    ctx: Context,
    global_model: TorchModel | None = None,
    *,
    module: str,
    module_kwargs: dict[str, Any] | None = None,
    target: str = "target",
    features: list[str] | None = None,
    input_shape: list[int] | None = None,
    epochs: int = 1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    optimizer: str = "sgd",
    mu: float = 0.0,
    seed: int = 0,
    threads: int | None = 1,
) -> TorchModel:
    """Train any PyTorch ``nn.Module`` (``module: import.path:Class``) on ``train``.

    The federated adapter as a tool (:func:`train_module`): state dict in from
    ``global_model``, state dict out in the returned :class:`TorchModel`. Features
    default to every column but ``target``; ``input_shape`` reshapes each row (e.g.
    ``[1, 8, 8]`` for an image). ``mu`` is FedProx's proximal weight.
    """
    return train_module(
        module, train, ctx, global_model, module_kwargs=module_kwargs, target=target,
        features=features, input_shape=input_shape, epochs=epochs,
        learning_rate=learning_rate, batch_size=batch_size, optimizer=optimizer, mu=mu,
        seed=seed, threads=threads,
    )  # fmt: skip
