"""Flower's Message API (its fastest simulation path) on the breast cancer FedAvg task.

    python3 benchmarks/fl/flower_message.py [--rounds 30] [--local-epochs 5]
        [--learning-rate 0.5] [--l2 0] [--nodes 3]

The same task, data, standardization and local training as ``flower_fedavg.py`` (which
times the legacy ``NumPyClient`` + ``Strategy`` path), written against the Message API of
Flower >= 1.21: a ``ClientApp`` with an ``@app.train()`` function exchanging
``ArrayRecord``/``MetricRecord`` messages, and a ``ServerApp`` whose ``@main`` runs the
message-based ``flwr.serverapp.strategy.FedAvg`` (weighted by ``num-examples``), in
``run_simulation``. Runs inside the Flower venv ``.bench-venvs/flower`` (created on first
use). Prints one JSON object like ``flower_fedavg.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flower_fedavg import ensure_venv, load_hospitals, local_train  # noqa: E402


def inner(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    from memory import PeakSampler, process_start  # type: ignore[import-not-found]

    t0 = process_start()
    sampler = PeakSampler(os.getpid()).start()

    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    clients, (test_x, test_y), d = load_hospitals(args.nodes, args.seed, args.alpha, args.iid)
    epochs, lr, l2 = args.local_epochs, args.learning_rate, args.l2

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:  # type: ignore[no-untyped-def]
        x, y = clients[int(context.node_config["partition-id"])]
        w, b = msg.content["arrays"].to_numpy_ndarrays()
        w, b = local_train(w, float(b[0]), x, y, epochs, lr, l2)
        content = RecordDict(
            {"arrays": ArrayRecord([w, np.array([b])]),
             "metrics": MetricRecord({"num-examples": len(y)})}
        )  # fmt: skip
        return Message(content=content, reply_to=msg)

    round_ends: list[float] = []
    marks: dict[str, float] = {}
    final: dict[str, object] = {}

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            marks.setdefault("first_round", time.time())
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            arrays, metrics = super().aggregate_train(server_round, replies)
            round_ends.append(time.time())
            final["arrays"] = arrays
            return arrays, metrics

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=args.nodes,
            min_available_nodes=args.nodes,
        )  # fmt: skip
        strategy.start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(d), np.zeros(1)]),
            num_rounds=args.rounds,
        )  # fmt: skip

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=args.nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    t_end = time.time()
    peak = sampler.stop()
    if "arrays" not in final:
        raise SystemExit("Flower's simulation ended without finishing a round (see its log)")
    w, b = final["arrays"].to_numpy_ndarrays()  # type: ignore[attr-defined]
    from sklearn.metrics import roc_auc_score

    scores = test_x @ w + b[0]
    accuracy = float(np.mean((scores >= 0.0) == (test_y == 1.0)))
    if len(round_ends) > 1:
        per_round = (round_ends[-1] - round_ends[0]) / (len(round_ends) - 1)
    else:
        per_round = round_ends[0] - marks["first_round"]
    import flwr

    return {
        "framework": f"flwr {flwr.__version__} (Message API, run_simulation)",
        "nodes": args.nodes,
        "rounds": args.rounds,
        "startup_s": round_ends[0] - per_round - t0,
        "seconds_per_round": per_round,
        "total_s": t_end - t0,
        "peak_rss_mb": peak / 2**20,
        "weights": [float(v) for v in np.concatenate([w, b])],
        "metrics": {"pooled": {"rows": len(test_y), "accuracy": accuracy,
                               "roc_auc": float(roc_auc_score(test_y, scores))}},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--iid", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args)), flush=True)
        return
    python = ensure_venv()
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--inner", *(argv or sys.argv[1:])],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"Flower's simulation failed (exit {res.returncode}); see above")
    print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
