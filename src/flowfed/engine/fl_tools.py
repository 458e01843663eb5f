"""The central tools a federated step runs between its rounds' node tasks.

The aggregation of one round's updates with the step's strategy (and client-level
differential privacy), and, under secure aggregation, the round's roster and the
secure sum that unmasks only the total. Each is built per step (it holds the step's
settings and strategy state) and runs as a central task of the round, with lineage.

Example:
    >>> # spec = make_aggregator(step.federated.settings)   # a ToolSpec
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.tools.core import Context, Model, build_spec

if TYPE_CHECKING:
    from flowfed.spec.models import Federated
    from flowfed.tools.core import ToolSpec


def _num_examples(model: Any) -> int:
    n = getattr(model, "num_examples", None)
    if n is None:
        n = (getattr(model, "training", None) or {}).get("rows")
    if not isinstance(n, int | float) or n <= 0:
        raise ValueError(
            f"a federated trainer's model must say how many examples it saw "
            f"(model.training['rows'] or model.num_examples); {type(model).__name__} does not"
        )
    return int(n)


def _weights_of(model: Any) -> list[np.ndarray]:
    get = getattr(model, "get_weights", None)
    if get is None or not hasattr(model, "with_weights"):
        raise ValueError(
            f"{type(model).__name__} cannot take part in federated training: it needs "
            "get_weights() and with_weights(weights) (see docs/federated.md)"
        )
    return [np.asarray(w, dtype=np.float64) for w in get()]


def make_aggregator(settings: Federated) -> ToolSpec:
    """The central aggregation tool of one federated step (holds the strategy's state)."""
    from flowfed.fl import Update, make_strategy, private_mean_update

    strategy = make_strategy(settings.strategy, **settings.strategy_config)
    rng = np.random.default_rng(settings.seed)

    def aggregate(
        updates: list[Model],
        ctx: Context,
        global_model: Model | None = None,
        *,
        round: int = 1,
        strategy_name: str = "fedavg",
        nodes: list[str] | None = None,
    ) -> Model:
        """Combine one round's updates into the next global model."""
        names = nodes or [f"node-{i}" for i in range(len(updates))]
        ups = [
            Update(name, _weights_of(m), _num_examples(m))
            for name, m in zip(names, updates, strict=True)
        ]
        base = updates[0] if global_model is None else global_model
        current = _weights_of(global_model) if global_model is not None else None
        if current is None:
            # Round 1 without an initial model: the trainers started from zeros, and the
            # server optimizers and DP-FedAvg measure each change from that start.
            current = [np.zeros_like(w) for w in ups[0].weights]
        privacy = settings.privacy
        if privacy is not None:
            new = private_mean_update(
                current, ups, privacy.clip_norm, privacy.noise_multiplier, rng
            )
        else:
            new = strategy.aggregate(ups, global_weights=current)
        total = sum(u.num_examples for u in ups)
        ctx.log(
            f"round {round}: {strategy_name} over {len(ups)} update(s) "
            f"({', '.join(u.node for u in ups)}), {total} examples"
        )
        model = base.with_weights(new)  # type: ignore[attr-defined]
        training = dict(getattr(model, "training", {}) or {})
        training.update(
            {"federated_round": round, "strategy": strategy_name, "rows": total, "nodes": names}
        )
        if hasattr(model, "training"):
            model.training = training
        return model

    return build_spec(aggregate, name="flowfed.fl_aggregate", version="1.0", type="analysis")


def roster_tool(public_keys: list[str], ctx: Context, *, nodes: list[str]) -> dict:
    """The round's roster ``{node: public key}`` from the participants' public keys."""
    if len(public_keys) != len(nodes):
        raise ValueError(f"{len(public_keys)} public keys for {len(nodes)} nodes")
    ctx.log(f"roster of {len(nodes)} participants: {', '.join(nodes)}")
    return dict(zip(nodes, public_keys, strict=True))


def secure_aggregate_tool(settings: Federated) -> Any:
    """The central step of a secure round: unmask the sum, never an individual update."""
    from flowfed.fl.privacy import add_gaussian_noise
    from flowfed.fl.secagg import secure_fedavg, secure_sum

    rng = np.random.default_rng(settings.seed + 1)

    def secure_aggregate(
        masked: list[dict],
        seeds: list[dict],
        global_model: Model,
        ctx: Context,
        *,
        round: int = 1,
        survivors: list[str] | None = None,
        dropped: list[str] | None = None,
        revealers: list[str] | None = None,
    ) -> Model:
        """Unmask the round's sum of masked updates into the next global model."""
        names = survivors or []
        payloads = dict(zip(names, masked, strict=True))
        revealed = dict(zip(revealers or [], seeds, strict=True))
        gone = set(dropped or [])
        base = _weights_of(global_model)
        privacy = settings.privacy
        if privacy is not None:
            total = secure_sum(payloads, gone, revealed, round=round)
            noisy = add_gaussian_noise(total, privacy.noise_multiplier, privacy.clip_norm, rng)
            new = [b + t / len(names) for b, t in zip(base, noisy, strict=True)]
            examples = 0
        else:
            new, examples = secure_fedavg(payloads, gone, revealed, round=round)
        ctx.log(
            f"round {round}: secure sum over {len(names)} masked update(s)"
            + (f", {len(gone)} dropped ({', '.join(sorted(gone))})" if gone else "")
        )
        model = global_model.with_weights(new)  # type: ignore[attr-defined]
        if hasattr(model, "training"):
            model.training = {
                "federated_round": round,
                "secure_aggregation": True,
                "rows": examples or None,
                "nodes": names,
            }
        return model

    return secure_aggregate
