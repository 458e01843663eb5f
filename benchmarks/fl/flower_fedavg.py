"""Flower's simulation of the breast cancer FedAvg logistic regression, measured.

    python3 benchmarks/fl/flower_fedavg.py [--rounds 30] [--local-epochs 5]
        [--learning-rate 0.1] [--l2 0] [--nodes 3] [--iid]

The first run creates ``.bench-venvs/flower`` (``python3 -m venv`` + ``pip install
'flwr[simulation]' numpy pandas scikit-learn pyyaml``; git-ignored), then re-runs this script
inside it. It prints one JSON object on stdout (Flower's own log goes to stderr):
``startup_s`` (process start to the end of the first round, less one steady round:
Ray starts its actors during the first round), ``seconds_per_round`` (rounds 2..N), ``total_s``,
``peak_rss_mb`` (the whole process tree, Ray's daemons and workers included), and
``metrics.pooled.{accuracy,roc_auc}`` of the final global model over the hospitals' test sets.

The task is the one ``examples/breast_cancer/flow.yaml`` runs in flowfed, set up the same
way:

- data: ``examples/breast_cancer/make_data.py`` (stratified 80/20 split with
  ``random_state=0``, the training part dealt to three hospitals by a Dirichlet(0.5) label
  split with seed 0, each hospital keeping its share of the test part);
- features standardized with the pooled training mean and population std (what
  ``flowfed.column_sums`` + ``flowfed.combine_sums`` compute from the nodes' sums);
- the model and its training are ``flowfed.logistic_regression``'s: zeros to start,
  full-batch gradient descent on the mean binary cross-entropy, L2 on the weights only,
  ``local_epochs`` steps of ``learning_rate`` per round from the global model;
- FedAvg weighted by sample counts, every node in every round, no federated evaluation
  rounds (the final model is evaluated once, after the last round).

With ``--nodes N`` the data is ``make_data.py --hospitals N [--iid]``'s, as flowfed's
``--simulate`` at N nodes reads it; the hospitals' test parts are pooled for the metrics.
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
ROOT = HERE.parent.parent
VENV = ROOT / ".bench-venvs" / "flower"
REQUIREMENTS = ["flwr[simulation]", "numpy", "pandas", "scikit-learn", "pyyaml"]


def ensure_venv() -> Path:
    """The Flower venv's python, creating the venv on first use."""
    python = VENV / "bin" / "python"
    marker = VENV / ".flowfed-ready"
    if not marker.exists():
        print(f"creating {VENV} (pip install {' '.join(REQUIREMENTS)})", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                check=True,
                stdout=sys.stderr,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(f"cannot set up Flower in {VENV}: {exc}") from None
        marker.write_text("ok\n")
    return python


# ------------------------------------------------------------------ inside the Flower venv


def load_hospitals(nodes: int, seed: int, alpha: float, iid: bool = False):  # type: ignore[no-untyped-def]
    """Per-client (x, y) train arrays and the pooled test arrays, standardized globally.

    The CSVs are the ones ``make_data.py`` writes for flowfed (``--hospitals nodes``, the
    same seed, alpha and ``--iid``): one ``breast.csv`` per hospital whose ``split``
    column says ``train`` or ``test``. The test parts of all hospitals are pooled, as
    flowfed's ``summary.metrics.pooled`` pools the hospitals' scores.
    """
    import tempfile

    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT / "examples" / "breast_cancer"))
    import make_data  # type: ignore[import-not-found]

    out = Path(tempfile.mkdtemp(prefix="flower-bench-"))
    make_data.make_data(out, seed=seed, alpha=alpha, hospitals=nodes, iid=iid)
    frames = [
        pd.read_csv(out / f"hospital-{name}" / "breast.csv")
        for name in make_data.hospital_names(nodes)
    ]
    trains = [f[f["split"] == "train"].drop(columns="split") for f in frames]
    tests = [f[f["split"] == "test"].drop(columns="split") for f in frames]
    features = [c for c in trains[0].columns if c != "target"]
    pooled = pd.concat(trains)
    mean = pooled[features].mean()
    std = pooled[features].std(ddof=0).replace(0.0, 1.0)

    def xy(t):  # type: ignore[no-untyped-def]
        x = ((t[features] - mean) / std).to_numpy(dtype=np.float64)
        return x, t["target"].to_numpy(dtype=np.float64)

    test_x, test_y = (np.concatenate(a) for a in zip(*(xy(t) for t in tests), strict=True))
    return [xy(t) for t in trains], (test_x, test_y), len(features)


def local_train(w, b, x, y, epochs: int, lr: float, l2: float):  # type: ignore[no-untyped-def]
    """flowfed.logistic_regression's full-batch gradient descent, from (w, b)."""
    import numpy as np

    n = len(y)
    for _ in range(epochs):
        z = x @ w + b
        p = np.exp(-np.logaddexp(0.0, -z))
        dz = (p - y) / n
        w = w - lr * (x.T @ dz + l2 * w)
        b = b - lr * dz.sum()
    return w, b


def inner(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    sys.path.insert(0, str(HERE))
    from memory import PeakSampler, process_start  # type: ignore[import-not-found]

    # When this process started: the interpreter's start and the imports count as start-up.
    t0 = process_start()

    sampler = PeakSampler(os.getpid()).start()

    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    clients, (test_x, test_y), d = load_hospitals(args.nodes, args.seed, args.alpha, args.iid)
    epochs, lr, l2 = args.local_epochs, args.learning_rate, args.l2

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, x, y) -> None:  # type: ignore[no-untyped-def]
            self.x, self.y = x, y

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            w, b = parameters
            w, b = local_train(w, float(b[0]), self.x, self.y, epochs, lr, l2)
            return [w, np.array([b])], len(self.y), {}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        x, y = clients[int(context.node_config["partition-id"])]
        return Client(x, y).to_client()

    marks: dict[str, float] = {}
    round_ends: list[float] = []
    final: dict[str, object] = {}

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
            marks.setdefault("first_round", time.time())
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            params, metrics = super().aggregate_fit(server_round, results, failures)
            round_ends.append(time.time())
            final["parameters"] = params
            final["failures"] = len(failures)
            return params, metrics

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.nodes,
        min_evaluate_clients=0,
        min_available_clients=args.nodes,
        initial_parameters=ndarrays_to_parameters([np.zeros(d), np.zeros(1)]),
    )

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=args.nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    t_end = time.time()
    peak = sampler.stop()
    if "parameters" not in final or "first_round" not in marks:
        raise SystemExit("Flower's simulation ended without finishing a round (see its log)")
    w, b = parameters_to_ndarrays(final["parameters"])  # type: ignore[arg-type]
    from sklearn.metrics import roc_auc_score

    scores = test_x @ w + b[0]
    accuracy = float(np.mean((scores >= 0.0) == (test_y == 1.0)))
    # Ray starts its actors during the first round: that is start-up, not a round. The
    # steady rounds (2..N) give seconds per round; start-up is everything before them,
    # less one such round.
    if len(round_ends) > 1:
        per_round = (round_ends[-1] - round_ends[0]) / (len(round_ends) - 1)
    else:
        per_round = round_ends[0] - marks["first_round"]
    import flwr

    return {
        "framework": f"flwr {flwr.__version__} (run_simulation, Ray backend)",
        "nodes": args.nodes,
        "rounds": args.rounds,
        "local_epochs": epochs,
        "learning_rate": lr,
        "l2": l2,
        "startup_s": round_ends[0] - per_round - t0,
        "seconds_per_round": per_round,
        "first_round_s": round_ends[0] - marks["first_round"],
        "to_first_round_s": marks["first_round"] - t0,
        "total_s": t_end - t0,
        "peak_rss_mb": peak / 2**20,
        "failures": final["failures"],
        "metrics": {
            "pooled": {
                "rows": len(test_y),
                "accuracy": accuracy,
                "roc_auc": float(roc_auc_score(test_y, scores)),
            }
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--iid", action="store_true", help="equal label mixes (make_data --iid)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args)), flush=True)
        return
    python = ensure_venv()
    # The measured process is a fresh interpreter of the venv: its start-up is Flower's.
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--inner", *(argv or sys.argv[1:])],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"Flower's simulation failed (exit {res.returncode}); see above")
    print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
