"""Checkpointed federated rounds: a run interrupted at round r resumes at round r+1.

After every round, the federated driver writes one checkpoint artifact to the run's
catalog, ``<model>.checkpoint`` (a new version per round), produced by that round's
aggregation task, whose lineage parent is the round's global model. It holds, as JSON:

* ``round`` and the global model's artifact id;
* the strategy's server state: every attribute of the strategy object (FedAdam and
  FedYogi moments, FedAvgM momentum, FedAdagrad's accumulator, ...), arrays stored as
  their exact float64 bytes, or what a strategy's own ``state_dict()`` returns;
* the server's: the DP accountant's round count (composition is deterministic, so the
  accountant is rebuilt exactly) and ε, whether the model was warm-started;
* the driver's: the participant-sampling generator's state, early stopping's best value
  and patience count (and whether it stopped), the last evaluation.

Secure aggregation keeps no state between rounds (fresh keys every round), so a round
cut short is run again from its start with new keys: its half-done tasks stay in the
catalog as history. Privacy noise is never checkpointed: it is drawn fresh from the OS's
CSPRNG in every round, as always.

When the engine resumes the run (``flowfed run --resume RUN_ID``, or a server restart
adopting it), the step's driver loads the newest checkpoint and goes on from the next
round; the final model then equals an uninterrupted run's bit for bit (without DP).

Example:
    >>> import numpy as np
    >>> decode(encode({"m": [np.array([0.1, 2.0])], "n": 3}))["m"][0].tolist()
    [0.1, 2.0]
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.engine.state import ArtifactRef
from flowfed.ids import new_id
from flowfed.runtime.lifecycle import State

if TYPE_CHECKING:
    from flowfed.engine.federated import FederatedDriver
    from flowfed.engine.state import TaskRun

#: The checkpoint format; a newer flowfed refuses to resume from an unknown one.
FORMAT = "flowfed.fl-checkpoint/1"


class CheckpointError(ValueError):
    """A state that cannot be checkpointed or restored: the message says which and why."""


def encode(value: Any, where: str = "state") -> Any:
    """``value`` as JSON, numpy arrays as ``{"__ndarray__": base64, dtype, shape}``."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind not in "biuf":
            raise CheckpointError(f"{where}: an array of dtype {arr.dtype} cannot be saved")
        return {
            "__ndarray__": base64.b64encode(arr.tobytes()).decode("ascii"),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
        }
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where}: key {k!r} is not a string")
            out[k] = encode(v, f"{where}.{k}")
        return out
    raise CheckpointError(
        f"{where}: a {type(value).__name__} cannot be checkpointed (numbers, strings, "
        "arrays, lists and dicts can; a strategy may define state_dict()/load_state_dict())"
    )


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            raw = base64.b64decode(value["__ndarray__"])
            arr = np.frombuffer(raw, dtype=np.dtype(value["dtype"])).copy()
            return arr.reshape(value["shape"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def strategy_state(strategy: Any) -> dict[str, Any]:
    """The strategy's server state: its ``state_dict()``, else all its attributes."""
    own = getattr(strategy, "state_dict", None)
    state = own() if callable(own) else dict(vars(strategy))
    return dict(encode(state, f"strategy '{getattr(strategy, 'name', type(strategy).__name__)}'"))


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Put a :func:`strategy_state` back (``load_state_dict`` when the strategy has one)."""
    values = decode(state)
    own = getattr(strategy, "load_state_dict", None)
    if callable(own):
        own(values)
        return
    for key, value in values.items():
        setattr(strategy, key, value)


class Checkpoints:
    """Writes and finds one federated step's round checkpoints in the run's catalog."""

    def __init__(self, driver: FederatedDriver) -> None:
        self.d = driver
        art = driver.node.outputs[driver.fed.model_output]
        self.name = f"{art}.checkpoint"
        self.model_name = art
        engine = getattr(driver.run, "e", None)
        self.db = getattr(engine, "db", None)

    # -- writing ----------------------------------------------------------------------------

    def save(self, r: int, model_ref: ArtifactRef, driver_state: dict[str, Any]) -> None:
        """Record round ``r``'s checkpoint, produced by the round's aggregation task."""
        from flowfed.artifacts import INLINE_MAX_BYTES, inline_uri, materialize

        d = self.d
        producer = self._aggregation_task(r)
        if producer is None:
            return
        server = d.server
        acc = server.accountant
        try:
            state = {
                "format": FORMAT,
                "step": d.tr.step,
                "round": r,
                "model": model_ref.id,
                "strategy": strategy_state(server.strategy),
                "server": {
                    "epsilon": server.epsilon,
                    "accountant_rounds": acc.rounds if acc is not None else 0,
                    "warm_start": server.warm_start,
                },
                "driver": encode(driver_state, "driver"),
            }
        except CheckpointError as exc:
            d.sink("log", {"level": "warning", "message": f"round {r}: no checkpoint: {exc}"})
            return
        m = materialize(state)
        run, record = d.run, d.run.record
        inline = len(m.data) <= INLINE_MAX_BYTES
        row = {
            "id": new_id(),
            "name": self.name,
            "hash": m.hash,
            "size": m.size,
            "kind": m.kind,
            "type_name": m.type_name,
            "uri": inline_uri(m.hash) if inline else run.store.uri(m.hash),
            "run_id": run.run_id,
            "task_id": producer.id,
            "step": producer.node.step,
            "node": producer.node.node,
            "shareable": True,
            "pickled": False,
            "created_at": time.time(),
            "meta": {"round": r},
            "parents": [model_ref.id],
            "output": "checkpoint",
            "blob": m.data if inline else None,
        }
        # Added to the finished aggregation task's outputs (bytes first, then the row).
        record.persister.submit(
            producer.node.step,
            [] if inline else [m],
            {
                "task_id": producer.id,
                "run_id": run.run_id,
                "state": State.FINISHED,
                "at": time.time(),
                "artifacts": [row],
                "cache_key": None,
                "cached": False,
                "error": None,
                "metrics": None,
                "progress": 1.0,
            },
        )

    def _aggregation_task(self, r: int) -> TaskRun | None:
        """Round ``r``'s finished aggregation task (plain or secure)."""
        for t in reversed(self.d.run.record.view.tasks.get(self.d.tr.step, [])):
            if t.node.round == r and t.node.id.endswith("/aggregate") and t.state is State.FINISHED:
                return t
        return None

    # -- reading ----------------------------------------------------------------------------

    def latest(self) -> tuple[dict[str, Any], ArtifactRef] | None:
        """The newest checkpoint of this step in this run and its global model, or None."""
        if self.db is None:
            return None
        from sqlalchemy import select

        from flowfed.db import models as mdb

        a = mdb.artifacts
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(a.c.id)
                .where(a.c.run_id == self.d.run.run_id, a.c.name == self.name)
                .order_by(a.c.version.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            arts = self.db.artifact_dicts(conn, [row[0]])
            ref = ArtifactRef.from_row(self.name, arts[row[0]])
            state = ref.handle(self.d.run.source(ref)).load()
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise CheckpointError(
                    f"checkpoint {ref.id} of step '{self.d.tr.step}' is not a {FORMAT} "
                    "checkpoint: cannot resume from it"
                )
            model = self.db.artifact_dicts(conn, [state["model"]]).get(state["model"])
        if model is None:
            raise CheckpointError(
                f"checkpoint of round {state['round']} names global model {state['model']}, "
                "which is not in the catalog"
            )
        return state, ArtifactRef.from_row(self.model_name, model)

    def restore(self, state: dict[str, Any]) -> dict[str, Any]:
        """Put the server's state back; return the driver's part."""
        server = self.d.server
        load_strategy_state(server.strategy, state["strategy"])
        s = state["server"]
        server.warm_start = bool(s["warm_start"])
        rounds = int(s.get("accountant_rounds") or 0)
        if server.accountant is not None and rounds > 0:
            server.epsilon = server.accountant.step(rounds)
        else:
            server.epsilon = s.get("epsilon")
        return dict(decode(state["driver"]))
