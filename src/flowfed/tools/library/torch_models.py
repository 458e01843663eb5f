"""The MLP trainer over PyTorch: the same model as ``flowfed.mlp``, trained with autograd.

``flowfed.torch_mlp`` returns a :class:`~flowfed.tools.library.models.MLPModel`, so its
output is evaluated, packaged, registered and averaged in federated rounds exactly like
the numpy trainer's (``get_weights``/``with_weights``, a JSON file). PyTorch is imported
when the tool runs, never when the library loads: without it installed the tool says so
and how to install it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowfed.tools import Context, tool
from flowfed.tools.library._common import binary_labels, feature_matrix
from flowfed.tools.library.models import Activation, MLPModel, _features_for, mlp_start
from flowfed.tools.library.torch_adapter import _torch, finite_loss, local_steps


@tool(name="flowfed.torch_mlp", version="1.0", type="analysis")
def torch_mlp(
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
    optimizer: str = "sgd",
    l2: float = 0.0,
    mu: float = 0.0,
    seed: int = 0,
) -> MLPModel:
    """Fit ``flowfed.mlp``'s one-hidden-layer perceptron with PyTorch (float64, full batch).

    ``optimizer`` is ``sgd`` (plain gradient descent: the numpy trainer's steps) or
    ``adam``. The start, ``l2`` and FedProx's ``mu`` (towards ``global_model``, or the
    shared start in a first round) are as in ``flowfed.mlp``. Reports ``loss`` per epoch,
    ``train_accuracy`` and ``examples``.
    """
    torch = _torch("flowfed.torch_mlp (flowfed.mlp is the same model trained without it)")
    if epochs < 1 or learning_rate <= 0 or l2 < 0 or mu < 0:
        raise ValueError("epochs must be >= 1, learning_rate > 0, and l2 and mu >= 0")
    cols = _features_for(train, target, features, global_model)
    x_np = feature_matrix(train, cols)
    y_np = binary_labels(train, target)
    start, hidden, activation = mlp_start(global_model, len(cols), hidden, activation, seed)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    params = [torch.tensor(np.asarray(p, dtype=np.float64), requires_grad=True) for p in start]
    opt, proximal = local_steps(params, optimizer=optimizer, learning_rate=learning_rate, mu=mu)
    act = torch.tanh if activation == "tanh" else torch.relu
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    w1, b1, w2, b2 = params
    for epoch in range(1, epochs + 1):
        ctx.check_cancelled()
        opt.zero_grad()
        z = act(x @ w1 + b1) @ w2 + b2[0]
        data_loss = loss_fn(z, y)
        loss = data_loss + proximal()
        if l2:
            loss = loss + (l2 / 2) * (w1.pow(2).sum() + w2.pow(2).sum())
        value = finite_loss(float(data_loss.detach()), epoch)
        loss.backward()
        opt.step()
        losses.append(value)
        ctx.metric("loss", value, step=epoch)
        ctx.progress(epoch, epochs, f"epoch {epoch}/{epochs}", unit="epochs")
    final = [p.detach().numpy().copy() for p in params]
    training = {
        "tool": "flowfed.torch_mlp@1.0",
        "framework": f"torch {torch.__version__}",
        "rows": len(y_np),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "optimizer": optimizer,
        "l2": l2,
        "mu": mu,
        "seed": seed,
        "warm_start": global_model is not None,
        "final_loss": losses[-1],
        "initial_loss": losses[0],
    }
    model = MLPModel(
        cols, final[0], final[1], final[2], final[3][0],
        activation=activation, target=target, training=training,
    )  # fmt: skip
    accuracy = float(np.mean((model.logits(x_np) >= 0.0) == (y_np == 1)))
    ctx.metric("train_accuracy", accuracy)
    ctx.metric("examples", float(len(y_np)))
    ctx.log(f"trained with PyTorch on {len(y_np)} rows: loss {losses[-1]:.4f}")
    return model
