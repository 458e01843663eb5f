"""The central tools a federated step runs between its rounds' node tasks.

The aggregation of one round's updates with the step's strategy (and client-level
differential privacy), and, under secure aggregation, the round's roster and the
secure sum that unmasks only the total. Each is built per step (it holds the step's
settings and strategy state) and runs as a central task of the round, with lineage.

Example:
    >>> # spec = make_aggregator(driver.server)   # a ToolSpec (flowfed.fl.server)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.tools.core import Context, Model, build_spec

if TYPE_CHECKING:
    from flowfed.fl.server import FederatedServer
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


def make_aggregator(server: FederatedServer) -> ToolSpec:
    """The central aggregation tool of one federated step (``server`` holds the
    strategy's state, the accountant and the rules: :mod:`flowfed.fl.server`)."""
    from flowfed.fl import Update

    def aggregate(
        updates: list[Model],
        ctx: Context,
        global_model: Model | None = None,
        *,
        round: int = 1,
        strategy_name: str = "fedavg",
        nodes: list[str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Model:
        """Combine one round's updates into the next global model."""
        names = nodes or [f"node-{i}" for i in range(len(updates))]
        ups = []
        for name, m in zip(names, updates, strict=True):
            weights = _weights_of(m)
            delta = _control_delta(m, weights, name)
            ups.append(Update(name, weights, _num_examples(m), _update_metrics(m), delta))
        base = updates[0] if global_model is None else global_model
        current = _weights_of(global_model) if global_model is not None else None
        if current is None:
            # Round 1 without an initial model: the trainers started from zeros, and the
            # server optimizers and DP-FedAvg measure each change from that start.
            current = [np.zeros_like(w) for w in ups[0].weights]
        new = server.aggregate(round, ups, current)
        total = sum(u.num_examples for u in ups)
        ctx.log(
            f"round {round}: {strategy_name} over {len(ups)} update(s) "
            f"({', '.join(u.node for u in ups)}), {total} examples"
        )
        model = base.with_weights(new)  # type: ignore[attr-defined]
        if hasattr(model, "training"):
            trainer = getattr(updates[0], "training", None)
            model.training = server.training_block(
                round, names, metrics, total, trainer if isinstance(trainer, dict) else None
            )
        return model

    aggregate.__flowfed_code_hash__ = _engine_code_hash(server)  # type: ignore[attr-defined]
    return build_spec(aggregate, name="flowfed.fl_aggregate", version="1.0", type="analysis")


def _engine_code_hash(server: FederatedServer) -> str:
    """The code hash of the tools made here, for their task records: this module's and
    the federated server's source with flowfed's version, and a user strategy's own
    effective code (a built-in one is flowfed's, named in the task's config)."""
    import hashlib
    from pathlib import Path

    import flowfed
    import flowfed.fl.server

    h = hashlib.sha256(f"flowfed-engine-tool\0{flowfed.__version__}\0".encode())
    for path in (__file__, flowfed.fl.server.__file__):
        h.update(Path(path).read_bytes())
    cls = type(server.strategy)
    if not cls.__module__.startswith("flowfed."):
        from flowfed.artifacts.codehash import code_hash

        for name, member in sorted(vars(cls).items()):
            if callable(member) and hasattr(member, "__code__"):
                h.update(f"\0{name}\0{code_hash(member)}".encode())
    return h.hexdigest()


def _update_metrics(model: Any) -> dict[str, float]:
    """The numbers a trainer put in its model's ``training`` block (q-FedAvg reads
    ``initial_loss``)."""
    training = getattr(model, "training", None) or {}
    return {
        k: float(v)
        for k, v in training.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _control_delta(model: Any, weights: list[np.ndarray], who: str) -> list[np.ndarray] | None:
    """SCAFFOLD's ``Δc_i`` from a trainer's ``training['control_delta']`` (None without)."""
    raw = (getattr(model, "training", None) or {}).get("control_delta")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != len(weights):
        raise ValueError(f"{who}: training['control_delta'] must hold one list per tensor")
    out = []
    for k, (flat, w) in enumerate(zip(raw, weights, strict=True)):
        arr = np.asarray(flat, dtype=np.float64)
        if arr.size != w.size:
            raise ValueError(f"{who}: control_delta tensor {k} has {arr.size} values, not {w.size}")
        out.append(arr.reshape(w.shape))
    return out


def roster_tool(public_keys: list[str], ctx: Context, *, nodes: list[str]) -> dict:
    """The round's roster ``{node: public key}`` from the participants' public keys."""
    if len(public_keys) != len(nodes):
        raise ValueError(f"{len(public_keys)} public keys for {len(nodes)} nodes")
    ctx.log(f"roster of {len(nodes)} participants: {', '.join(nodes)}")
    return dict(zip(nodes, public_keys, strict=True))


def secure_aggregate_tool(server: FederatedServer) -> Any:
    """The central step of a secure round: unmask the sum, never an individual update."""
    from flowfed.fl.secagg import secure_fedavg, secure_sum

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
        metrics: dict[str, float] | None = None,
    ) -> Model:
        """Unmask the round's sum of masked updates into the next global model."""
        names = survivors or []
        payloads = dict(zip(names, masked, strict=True))
        revealed = dict(zip(revealers or [], seeds, strict=True))
        gone = set(dropped or [])
        base = _weights_of(global_model)
        if server.settings.privacy is not None:
            total = secure_sum(payloads, gone, revealed, round=round)
            new = server.aggregate_secure_sum(round, total, len(names), base)
            examples = 0
        else:
            mean, examples = secure_fedavg(payloads, gone, revealed, round=round)
            new = server.aggregate_secure_mean(round, mean, examples, base)
        ctx.log(
            f"round {round}: secure sum over {len(names)} masked update(s)"
            + (f", {len(gone)} dropped ({', '.join(sorted(gone))})" if gone else "")
        )
        model = global_model.with_weights(new)  # type: ignore[attr-defined]
        if hasattr(model, "training"):
            model.training = server.training_block(round, names, metrics, examples or None)
        return model

    secure_aggregate.__flowfed_code_hash__ = _engine_code_hash(server)  # type: ignore[attr-defined]
    return secure_aggregate
