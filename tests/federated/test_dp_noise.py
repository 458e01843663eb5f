"""Defect 1 of issue 21: privacy noise comes from the OS's CSPRNG, never from the flow seed.

The noise of a DP round is recovered from the catalog (round 1 starts from zeros, so
``n · global = Σ clip(update) + noise``) and compared with every stream a reader of
the flow file could regenerate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowfed.api import load_artifact
from flowfed.db import Database
from flowfed.fl import clip_update
from tests.federated.conftest import errors, run_json, write_flow

CLIP, Z = 1.0, 1.0


def _round_one(hospitals: Path, tmp: Path, secure: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the global model's weights, the noise added to the clipped sum) of a 1-round run."""
    tmp.mkdir()
    fed = {"privacy": {"clip_norm": CLIP, "noise_multiplier": Z}, "secure_aggregation": secure}
    flow = write_flow(tmp, hospitals / "nodes.yaml", config={"rounds": 1}, federated=fed)
    home = tmp / "home"
    result = run_json(["run", str(flow), "--simulate"], home)
    assert result["status"] == "success", errors(result)
    db_url = f"sqlite:///{home / 'flowfed.db'}"
    arts = str(home / "artifacts")
    final = load_artifact(result["summary"]["model"]["id"], database_url=db_url, artifacts_url=arts)
    weights = np.concatenate([np.ravel(w) for w in final.get_weights()])
    if secure:  # updates never leave the nodes: the sum is what the server unmasked
        return weights, np.array([])
    with Database(db_url) as db:
        ids = [
            a["id"]
            for a in db.list_artifacts(run_id=result["run_id"], limit=1000)
            if a["name"].startswith("model.update[")
        ]
    total = np.zeros_like(weights)
    for i in ids:
        model = load_artifact(i, database_url=db_url, artifacts_url=arts)
        clipped = clip_update([np.asarray(w, dtype=np.float64) for w in model.get_weights()], CLIP)
        total += np.concatenate([np.ravel(c) for c in clipped])
    return weights, len(ids) * weights - total


def test_dp_noise_is_not_reproducible_from_the_flow(hospitals: Path, tmp_path: Path) -> None:
    w1, noise = _round_one(hospitals, tmp_path / "one", secure=False)
    w2, _ = _round_one(hospitals, tmp_path / "two", secure=False)
    RUNS_DIFFER = not np.allclose(w1, w2)
    d = noise.size
    assert abs(noise.std() - Z * CLIP) < 0.5  # it is the noise: N(0, (zC)^2) per coordinate
    for seed in range(0, 64):  # the flow's seed (0 by default), seed + 1, and their neighbours
        stream = np.random.default_rng(seed).normal(0.0, Z * CLIP, d)
        assert not np.allclose(noise, stream, atol=1e-6), f"noise is default_rng({seed})"
    assert RUNS_DIFFER, "two runs of a DP flow gave the same model"


def test_secure_dp_noise_differs_between_runs(hospitals: Path, tmp_path: Path) -> None:
    w1, _ = _round_one(hospitals, tmp_path / "one", secure=True)
    w2, _ = _round_one(hospitals, tmp_path / "two", secure=True)
    assert not np.allclose(w1, w2), "two runs of a secure DP flow gave the same model"
