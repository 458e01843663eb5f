"""The secure-aggregation tools, run by flowfed's real local engine, and the server side.

One flow (run once for the module) plays three rounds on three nodes, each node training
``flowfed.logistic_regression`` from a shared global model:

- round 1: every node masks its weighted update (secure FedAvg);
- round 2: ``hospital-c`` publishes keys but never masks; the survivors reveal;
- round 3: DP-FedAvg, every node masks its change clipped to ``CLIP``.

The test then does what the federated driver does: it reads the shareable payloads from
the catalog and calls ``secure_fedavg`` / ``secure_sum``.
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import flowfed.tools.library  # noqa: F401  (registers the built-ins)
from flowfed import Context, Flow, Step, load_artifact, run_flow, tool
from flowfed.fl import FixedPoint, SecAggError, Update, clip_update, fedavg
from flowfed.fl.secagg import (
    MaskedUpdate,
    RevealedSeeds,
    SecAggClient,
    secure_fedavg,
    secure_sum,
)
from flowfed.tools import call_tool, get_registry
from flowfed.tools.library.models import LogisticRegressionModel

NODES = ["hospital-a", "hospital-b", "hospital-c"]
ROWS = {"hospital-a": 120, "hospital-b": 260, "hospital-c": 70}
CLIP = 0.05
FEATURES = 4


@tool(name="secagg_test_data", version="1", type="database-adapter")
def secagg_test_data(*, seed: int, rows: int) -> pd.DataFrame:
    """A node's private table: standardized features, a 0/1 target, a node-specific shift."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=0.3 * seed, size=(rows, FEATURES))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=rows) > 0).astype(int)
    table = pd.DataFrame(x, columns=[f"x{i}" for i in range(FEATURES)])
    table["target"] = y
    return table


@tool(name="secagg_test_roster", version="1", type="data-transformation")
def secagg_test_roster(a: str, b: str, c: str, *, nodes: list[str]) -> dict[str, str]:
    """What the driver does between steps 1 and 3: collect the public keys into a roster."""
    return dict(zip(nodes, [a, b, c], strict=True))


def _keys(rnd: int, node: str) -> Step:
    return Step(
        name=f"keys{rnd} {node}",
        tool="flowfed.secagg_keys",
        params={"node": node, "round": rnd},
        outputs={"public_key": f"pk{rnd}.{node}", "secret": f"sk{rnd}.{node}"},
    )


def _roster(rnd: int) -> Step:
    return Step(
        name=f"roster{rnd}",
        tool="secagg_test_roster",
        inputs={k: f"pk{rnd}.{n}" for k, n in zip("abc", NODES, strict=True)},
        params={"nodes": NODES},
        outputs=[f"roster{rnd}"],
    )


def _mask(rnd: int, node: str, **params: Any) -> Step:
    inputs = {"update": f"model.{node}", "secret": f"sk{rnd}.{node}", "roster": f"roster{rnd}"}
    if "clip_norm" in params:
        inputs["global_model"] = "global"
    return Step(
        name=f"mask{rnd} {node}",
        tool="flowfed.secagg_mask",
        inputs=inputs,
        params={"node": node, "round": rnd, **params},
        outputs=[f"masked{rnd}.{node}"],
    )


def three_round_flow() -> Flow:
    steps = [
        Step(
            name="global data",
            tool="secagg_test_data",
            params={"seed": 99, "rows": 50},
            outputs=["global_train"],
        ),
        Step(
            name="global fit",
            tool="flowfed.logistic_regression",
            inputs={"train": "global_train"},
            params={"epochs": 3},
            outputs=["global"],
        ),
    ]
    for i, node in enumerate(NODES):
        steps += [
            Step(
                name=f"data {node}",
                tool="secagg_test_data",
                params={"seed": i, "rows": ROWS[node]},
                outputs=[f"train.{node}"],
            ),
            Step(
                name=f"fit {node}",
                tool="flowfed.logistic_regression",
                inputs={"train": f"train.{node}", "global_model": "global"},
                params={"epochs": 40, "learning_rate": 0.5},
                outputs=[f"model.{node}"],
            ),
        ]
    for rnd in (1, 2, 3):
        steps += [_keys(rnd, n) for n in NODES] + [_roster(rnd)]
    steps += [_mask(1, n) for n in NODES]
    # Round 2: hospital-c published keys, then vanished before masking.
    steps += [_mask(2, n) for n in NODES[:2]]
    steps += [
        Step(
            name=f"reveal2 {node}",
            tool="flowfed.secagg_reveal",
            inputs={"secret": f"sk2.{node}", "roster": "roster2"},
            params={"dropped": ["hospital-c"], "node": node, "round": 2},
            outputs=[f"seeds2.{node}"],
        )
        for node in NODES[:2]
    ]
    steps += [_mask(3, n, clip_norm=CLIP) for n in NODES]
    return Flow(name="secure aggregation tools", steps=steps)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs the three-round flow once; returns the stores and a reader of its artifacts."""
    tmp: Path = tmp_path_factory.mktemp("secagg-flow")
    stores = {
        "database_url": f"sqlite:///{tmp / 'db.sqlite'}",
        "artifacts_url": str(tmp / "artifacts"),
    }
    result = run_flow(three_round_flow(), **stores)
    assert result.status == "success", result.to_dict()

    def art(name: str) -> Any:
        return load_artifact(name, **stores)

    return {"stores": stores, "art": art, "result": result}


def plain_updates(art: Any, nodes: list[str]) -> list[Update]:
    out = []
    for node in nodes:
        model = art(f"model.{node}")
        out.append(Update(node, model.get_weights(), model.training["rows"]))
    return out


def flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights])


def test_the_planner_types_the_three_tools_as_data_transformations() -> None:
    for name in ("flowfed.secagg_keys", "flowfed.secagg_mask", "flowfed.secagg_reveal"):
        spec = get_registry().get(name)
        assert str(spec.type) == "data-transformation"
        assert not any(o.is_model for o in spec.outputs)
    assert get_registry().get("flowfed.secagg_keys").output_names == ["public_key", "secret"]
    assert get_registry().get("flowfed.secagg_mask").output_names == ["masked"]
    assert get_registry().get("flowfed.secagg_reveal").output_names == ["seeds"]


@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        ("flowfed.secagg_keys", ["public_key", "secret"]),
        ("flowfed.secagg_mask", ["masked"]),
        ("flowfed.secagg_reveal", ["seeds"]),
    ],
)
def test_the_cli_lists_each_tool_with_its_type_and_outputs(name: str, outputs: list[str]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowfed",
            "tools",
            "show",
            name,
            "--import",
            "flowfed.tools.library",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{name}@1.0 · data-transformation" in proc.stdout
    for output in outputs:
        assert f"output {output}:" in proc.stdout


def test_masked_payloads_differ_from_the_plain_updates_and_look_uniform(
    run: dict[str, Any],
) -> None:
    art = run["art"]
    fp = FixedPoint(24)
    for update in plain_updates(art, NODES):
        payload = art(f"masked1.{update.node}")
        # What the server receives is JSON: metadata and one base64 vector, nothing else.
        assert sorted(payload) == [
            "data",
            "format",
            "frac_bits",
            "node",
            "participants",
            "round",
            "shapes",
            "weighted",
        ]
        assert payload["participants"] == sorted(NODES)
        mu = MaskedUpdate.from_json(payload)
        truth = np.concatenate([flat(update.weights) * update.num_examples, [0.0]])
        truth[-1] = update.num_examples
        seen = fp.decode(mu.data)
        assert not np.any(np.isclose(seen, truth, atol=1e-3)), update.node
        assert np.median(np.abs(seen)) > 1e9, update.node
        # The example count, the last value, is masked too: the server never learns it.
        assert abs(seen[-1] - update.num_examples) > 1e6
        # Uniform over the ring: each of the 64 bits is set about half the time overall.
        bits = np.unpackbits(mu.data.view(np.uint8))
        assert 0.4 < bits.mean() < 0.6, update.node
    datas = [MaskedUpdate.from_json(art(f"masked1.{n}")).data for n in NODES]
    assert not np.array_equal(datas[0], datas[1])


def test_secure_fedavg_over_three_nodes_equals_plain_fedavg(run: dict[str, Any]) -> None:
    art = run["art"]
    updates = plain_updates(art, NODES)
    masked = {n: art(f"masked1.{n}") for n in NODES}
    avg, examples = secure_fedavg(masked, set(), {}, round=1)
    assert examples == sum(ROWS.values())
    want = fedavg(updates)
    assert [a.shape for a in avg] == [w.shape for w in want]
    for got, expected in zip(avg, want, strict=True):
        assert np.allclose(got, expected, rtol=0, atol=1e-6)
    # The nodes really trained different models: the average is not any one of them.
    assert not np.allclose(flat(updates[0].weights), flat(updates[1].weights), atol=1e-3)


def test_a_node_dropping_after_its_keys_is_recovered_through_reveal(run: dict[str, Any]) -> None:
    art = run["art"]
    survivors = NODES[:2]
    masked = {n: art(f"masked2.{n}") for n in survivors}
    revealed = {n: art(f"seeds2.{n}") for n in survivors}
    assert all(masked[n]["participants"] == sorted(NODES) for n in survivors)
    assert revealed["hospital-a"]["seeds"].keys() == {"hospital-c"}
    dropped = {"hospital-c"}
    with pytest.raises(SecAggError, match=r"'hospital-a' has not revealed .*'hospital-c'"):
        secure_fedavg(masked, dropped, {"hospital-b": revealed["hospital-b"]})
    avg, examples = secure_fedavg(masked, dropped, revealed, round=2)
    assert examples == ROWS["hospital-a"] + ROWS["hospital-b"]
    for got, want in zip(avg, fedavg(plain_updates(art, survivors)), strict=True):
        assert np.allclose(got, want, rtol=0, atol=1e-6)
    # Both ends of a pair derive the same seed: what the survivors revealed is the seed
    # hospital-c would have used, recomputed from the stored secrets alone.
    c = SecAggClient.from_secret(art("sk2.hospital-c"))
    a_seed = RevealedSeeds.from_json(revealed["hospital-a"]).seeds["hospital-c"]
    from flowfed.fl.secagg import decode_roster

    assert c.reveal_pair_seed("hospital-a", decode_roster(art("roster2"))) == a_seed


def test_dp_path_sums_the_clipped_changes_as_clipping_by_hand_does(run: dict[str, Any]) -> None:
    art = run["art"]
    base = art("global").get_weights()
    masked = {n: art(f"masked3.{n}") for n in NODES}
    assert not any(m["weighted"] for m in masked.values())
    total = secure_sum(masked, set(), {}, round=3)
    by_hand = [np.zeros_like(b) for b in base]
    for update in plain_updates(art, NODES):
        delta = [w - b for w, b in zip(update.weights, base, strict=True)]
        assert np.linalg.norm(flat(delta)) > CLIP  # so clipping really did something
        for t, c in zip(by_hand, clip_update(delta, CLIP), strict=True):
            t += c
    for got, want in zip(total, by_hand, strict=True):
        assert np.allclose(got, want, rtol=0, atol=1e-6)
    assert np.linalg.norm(flat(total)) <= len(NODES) * CLIP + 1e-6
    # A weighted round cannot be read as a sum, nor a sum as a FedAvg.
    with pytest.raises(SecAggError, match="use aggregate"):
        secure_fedavg(masked)
    with pytest.raises(SecAggError, match="use fedavg"):
        secure_sum({n: art(f"masked1.{n}") for n in NODES})


def test_keys_are_fresh_in_every_run_even_with_caching_on(tmp_path: Path) -> None:
    stores = {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "artifacts_url": str(tmp_path / "artifacts"),
    }
    flow = Flow(name="keys only", steps=[_keys(1, "hospital-a")])
    first = run_flow(flow, **stores)
    second = run_flow(flow, **stores)
    assert first.status == second.status == "success"
    task = second.view.tasks["keys1 hospital-a"][0]
    assert not task.cached and task.message and "caching off" in task.message
    assert load_artifact("pk1.hospital-a:1", **stores) != load_artifact(
        "pk1.hospital-a:2", **stores
    )


def test_a_mask_step_given_another_rounds_secret_fails_the_run_naming_the_node(
    tmp_path: Path,
) -> None:
    stores = {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "artifacts_url": str(tmp_path / "artifacts"),
    }
    steps = [
        Step(
            name="data",
            tool="secagg_test_data",
            params={"seed": 0, "rows": 30},
            outputs=["train.hospital-a"],
        ),
        Step(
            name="fit",
            tool="flowfed.logistic_regression",
            inputs={"train": "train.hospital-a"},
            params={"epochs": 2},
            outputs=["model.hospital-a"],
        ),
        *[_keys(1, n) for n in NODES],
        _roster(1),
        Step(
            name="mask",
            tool="flowfed.secagg_mask",
            inputs={"update": "model.hospital-a", "secret": "sk1.hospital-a", "roster": "roster1"},
            params={"node": "hospital-a", "round": 2},
            outputs=["masked"],
        ),
    ]
    result = run_flow(Flow(name="wrong round", steps=steps), **stores)
    assert result.status == "failed"
    error = result.view.tasks["mask"][0].error
    assert error and "'hospital-a'" in str(error) and "round 1" in str(error)
    assert "round 2" in str(error)


# ------------------------------------------------------------------ bad input, tool by tool


def call(name: str, ctx: Context, /, **kwargs: Any) -> Any:
    """Call a registered tool as the engine does: inputs, validated config, a context."""
    spec = get_registry().get(name)
    args = {k: v for k, v in kwargs.items() if k in spec.inputs}
    config = spec.config_model(**{k: v for k, v in kwargs.items() if k not in spec.inputs})
    return spec.split_outputs(call_tool(spec, args, config, ctx))


def model(seed: int) -> LogisticRegressionModel:
    """A small trained-looking model that says it saw ``10 + seed`` rows."""
    rng = np.random.default_rng(seed)
    return LogisticRegressionModel(
        [f"x{i}" for i in range(FEATURES)],
        rng.normal(size=FEATURES),
        float(rng.normal()),
        training={"rows": 10 + seed},
    )


def masked_by_tool(round1: dict[str, Any], nodes: list[str]) -> dict[str, dict[str, Any]]:
    """Each node's ``flowfed.secagg_mask`` payload for round 1 (node i masks ``model(i)``)."""
    return {
        n: call(
            "flowfed.secagg_mask",
            Context(),
            update=model(NODES.index(n)),
            secret=round1["secret"][n],
            roster=round1["roster"],
        )["masked"]
        for n in nodes
    }


def fedavg_in_clear(nodes: list[str]) -> list[np.ndarray]:
    """What :func:`masked_by_tool`'s payloads of ``nodes`` must average to."""
    return fedavg(
        [Update(n, model(NODES.index(n)).get_weights(), 10 + NODES.index(n)) for n in nodes]
    )


@pytest.fixture
def round1() -> dict[str, Any]:
    """Keys of three nodes for round 1, through the tool, and the round's roster."""
    ctx = Context()
    keys = {n: call("flowfed.secagg_keys", ctx, node=n, round=1) for n in NODES}
    return {
        "secret": {n: k["secret"] for n, k in keys.items()},
        "roster": {n: k["public_key"] for n, k in keys.items()},
    }


def test_keys_need_a_node_and_a_round() -> None:
    with pytest.raises(ValueError, match="set the config field 'node'"):
        call("flowfed.secagg_keys", Context(), round=1)
    with pytest.raises(ValueError, match="'hospital-a': cannot tell the round"):
        call("flowfed.secagg_keys", Context(), node="hospital-a")
    # A real context supplies both; the config may not contradict it.
    ctx = Context(node="hospital-a", round=4)
    out = call("flowfed.secagg_keys", ctx)
    assert (out["secret"]["node"], out["secret"]["round"]) == ("hospital-a", 4)
    with pytest.raises(ValueError, match="config node 'hospital-b' but this task runs on"):
        call("flowfed.secagg_keys", ctx, node="hospital-b")


def test_wrong_round_or_wrong_node_is_refused_naming_the_node(round1: dict[str, Any]) -> None:
    ctx = Context()
    sec, roster = round1["secret"], round1["roster"]
    update = model(1)
    with pytest.raises(SecAggError, match=r"'hospital-a': the secret is for round 1.*round 2"):
        call(
            "flowfed.secagg_mask",
            ctx,
            update=update,
            secret=sec["hospital-a"],
            roster=roster,
            round=2,
        )
    with pytest.raises(SecAggError, match="'hospital-b' was given the secret of node 'hospital-a'"):
        call(
            "flowfed.secagg_mask",
            ctx,
            update=update,
            secret=sec["hospital-a"],
            roster=roster,
            node="hospital-b",
        )
    # On a node agent the context knows the node and round: it catches the same mistakes.
    on_a_round_2 = Context(node="hospital-a", round=2)
    with pytest.raises(SecAggError, match=r"'hospital-a': the secret is for round 1.*round 2"):
        call(
            "flowfed.secagg_mask",
            on_a_round_2,
            update=update,
            secret=sec["hospital-a"],
            roster=roster,
        )
    on_b = Context(node="hospital-b", round=1)
    with pytest.raises(SecAggError, match="'hospital-b' was given the secret of node 'hospital-a'"):
        call(
            "flowfed.secagg_reveal",
            on_b,
            secret=sec["hospital-a"],
            roster=roster,
            dropped=["hospital-c"],
        )
    # A roster of another round holds another key for this node.
    other = call("flowfed.secagg_keys", ctx, node="hospital-a", round=2)
    stale = {**roster, "hospital-a": other["public_key"]}
    with pytest.raises(SecAggError, match="different public key for node 'hospital-a'"):
        call("flowfed.secagg_mask", ctx, update=update, secret=sec["hospital-a"], roster=stale)
    # The server checks the payloads' rounds too.
    masked = masked_by_tool(round1, NODES)
    with pytest.raises(SecAggError, match="'hospital-a' sent a masked update for round 1"):
        secure_fedavg(masked, round=2)
    late = copy.deepcopy(masked)
    late["hospital-c"]["round"] = 7
    with pytest.raises(SecAggError, match="'hospital-c' disagrees with node 'hospital-a' on round"):
        secure_fedavg(late)


def test_tampered_payloads_are_refused_naming_the_node(round1: dict[str, Any]) -> None:
    ctx = Context()
    sec, roster = round1["secret"], round1["roster"]
    masked = masked_by_tool(round1, NODES)
    avg, _ = secure_fedavg(masked)  # the untouched payloads aggregate
    assert np.allclose(flat(avg), flat(fedavg_in_clear(NODES)), atol=1e-6)

    def tampered(node: str, **change: Any) -> dict[str, Any]:
        out = copy.deepcopy(masked)
        out[node].update(change)
        return out

    raw = base64.b64decode(masked["hospital-b"]["data"])
    short = base64.b64encode(raw[:-16]).decode()  # two uint64 values fewer
    with pytest.raises(SecAggError, match=r"'hospital-b': 'data' holds 4 values .* need 6"):
        secure_fedavg(tampered("hospital-b", data=short))
    with pytest.raises(SecAggError, match="'hospital-c': 'data' is not valid base64"):
        secure_fedavg(tampered("hospital-c", data="not base64!"))
    with pytest.raises(SecAggError, match="'hospital-a': 'round' must be int"):
        secure_fedavg(tampered("hospital-a", round="1"))
    with pytest.raises(SecAggError, match=r"'hospital-b' disagrees .* on participants"):
        secure_fedavg(tampered("hospital-b", participants=["hospital-a", "hospital-b"]))
    with pytest.raises(SecAggError, match=r"'hospital-c': expected a 'flowfed.secagg.masked/1'"):
        secure_fedavg(tampered("hospital-c", format="something/9"))
    swapped = {**masked, "hospital-b": masked["hospital-a"]}
    with pytest.raises(SecAggError, match="filed under 'hospital-b' comes from 'hospital-a'"):
        secure_fedavg(swapped)
    with pytest.raises(SecAggError, match="the secret's public key does not match"):
        SecAggClient.from_secret({**sec["hospital-a"], "public_key": roster["hospital-b"]})
    with pytest.raises(SecAggError, match="roster entry 'hospital-c'"):
        call(
            "flowfed.secagg_mask",
            ctx,
            update=model(0),
            secret=sec["hospital-a"],
            roster={**roster, "hospital-c": "AAAA"},
        )


def test_missing_or_unwarranted_reveals_are_refused_naming_the_node(
    round1: dict[str, Any],
) -> None:
    ctx = Context()
    sec, roster = round1["secret"], round1["roster"]
    masked = masked_by_tool(round1, NODES[:2])
    seeds = {
        n: call("flowfed.secagg_reveal", ctx, secret=sec[n], roster=roster, dropped=["hospital-c"])[
            "seeds"
        ]
        for n in NODES[:2]
    }
    dropped = {"hospital-c"}
    with pytest.raises(SecAggError, match=r"'hospital-b' has not revealed .*flowfed.secagg_reveal"):
        secure_fedavg(masked, dropped, {"hospital-a": seeds["hospital-a"]})
    with pytest.raises(
        SecAggError, match=r"round 1: every participant .* unaccounted: \['hospital-c'\]"
    ):
        secure_fedavg(masked)
    avg, n = secure_fedavg(masked, dropped, seeds)
    want = fedavg_in_clear(NODES[:2])
    assert n == 21 and np.allclose(flat(avg), flat(want), atol=1e-6)
    # A reveal for a node that did send its update would let the server strip its masks.
    with pytest.raises(SecAggError, match="'hospital-a' revealed its seed with 'hospital-b'"):
        bad = call(
            "flowfed.secagg_reveal",
            ctx,
            secret=sec["hospital-a"],
            roster=roster,
            dropped=["hospital-b"],
        )["seeds"]
        secure_fedavg(masked, dropped, {**seeds, "hospital-a": bad})
    with pytest.raises(SecAggError, match="'hospital-a' would be the only survivor"):
        call(
            "flowfed.secagg_reveal",
            ctx,
            secret=sec["hospital-a"],
            roster=roster,
            dropped=["hospital-b", "hospital-c"],
        )
    with pytest.raises(SecAggError, match=r"'hospital-a': dropped node\(s\) \['hospital-z'\]"):
        call(
            "flowfed.secagg_reveal",
            ctx,
            secret=sec["hospital-a"],
            roster=roster,
            dropped=["hospital-z"],
        )


def test_mask_config_mistakes_are_clear(round1: dict[str, Any]) -> None:
    ctx = Context()
    sec, roster = round1["secret"], round1["roster"]
    no_rows = model(0)
    no_rows.training = {}
    with pytest.raises(SecAggError, match="'hospital-a': the update records no positive"):
        call("flowfed.secagg_mask", ctx, update=no_rows, secret=sec["hospital-a"], roster=roster)
    with pytest.raises(SecAggError, match=r"'hospital-a': clip_norm .* wire the round's global"):
        call(
            "flowfed.secagg_mask",
            ctx,
            update=no_rows,
            secret=sec["hospital-a"],
            roster=roster,
            clip_norm=1.0,
        )
    with pytest.raises(SecAggError, match="num_examples has no effect with clip_norm"):
        call(
            "flowfed.secagg_mask",
            ctx,
            update=no_rows,
            secret=sec["hospital-a"],
            roster=roster,
            global_model=model(5),
            clip_norm=1.0,
            num_examples=3,
        )
    with pytest.raises(SecAggError, match="'hospital-a': input 'update' is a dict"):
        call("flowfed.secagg_mask", ctx, update={"w": 1}, secret=sec["hospital-a"], roster=roster)
    # num_examples overrides the recorded rows; the server learns only the total.
    out = call(
        "flowfed.secagg_mask",
        ctx,
        update=no_rows,
        secret=sec["hospital-a"],
        roster=roster,
        num_examples=5,
    )["masked"]
    assert out["weighted"] and out["round"] == 1
