"""Secure aggregation: the server's view is masked, the masks cancel, dropouts recover."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flowfed.fl import (
    FixedPoint,
    MaskedUpdate,
    SecAggClient,
    SecAggError,
    SecAggServer,
    Update,
    Weights,
    add_gaussian_noise,
    clip_update,
    fedavg,
)
from flowfed.fl.secagg import derive_pair_seed, mask_vector

NODES = ["alpha", "bravo", "charlie", "delta", "echo"]
FP = FixedPoint(24)
# Each encoded value is off by at most 2^-25; a sum of n values by at most n · 2^-25.
TOL = len(NODES) * 2.0**-25


def model(rng: np.random.Generator) -> Weights:
    return [rng.normal(size=(3, 4)), rng.normal(size=500)]


def setup_round(
    inputs: dict[str, Weights], round: int = 1
) -> tuple[dict[str, SecAggClient], dict[str, MaskedUpdate]]:
    clients = {n: SecAggClient(n, round) for n in inputs}
    roster = {n: c.public_key() for n, c in clients.items()}
    masked = {n: clients[n].mask(w, roster) for n, w in inputs.items()}
    return clients, masked


def plain_sum(models: Sequence[Weights]) -> Weights:
    return [np.sum([m[i] for m in models], axis=0) for i in range(len(models[0]))]


def flat(w: Weights) -> np.ndarray:
    return np.concatenate([np.ravel(t) for t in w])


def test_masks_cancel_and_sum_equals_plain_sum() -> None:
    rng = np.random.default_rng(1)
    inputs = {n: model(rng) for n in NODES}
    _, masked = setup_round(inputs)
    total = SecAggServer().aggregate(masked)
    expected = plain_sum(list(inputs.values()))
    assert [t.shape for t in total] == [(3, 4), (500,)]
    for got, want in zip(total, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_server_view_of_each_update_is_masked() -> None:
    rng = np.random.default_rng(2)
    inputs = {n: model(rng) for n in NODES}
    _, masked = setup_round(inputs)
    for node, mu in masked.items():
        # What the server holds: one uint64 vector. Read it as the data it should encode.
        seen = FP.decode(mu.data)
        truth = flat(inputs[node])
        assert mu.data.dtype == np.uint64
        assert not np.any(np.isclose(seen, truth, atol=1e-3)), node  # differs everywhere
        assert abs(np.corrcoef(seen, truth)[0, 1]) < 0.2, node  # and is uncorrelated
        # Uniform over the ring: the top bit is set about half the time, values are huge.
        top_bit = (mu.data >> np.uint64(63)).mean()
        assert 0.4 < top_bit < 0.6, node
        assert np.median(np.abs(seen)) > 1e9, node
    assert not any(
        np.array_equal(a.data, b.data)
        for a in masked.values()
        for b in masked.values()
        if a is not b
    )


def test_two_nodes_each_see_only_noise() -> None:
    a, b = SecAggClient("a", 7), SecAggClient("b", 7)
    roster = {"a": a.public_key(), "b": b.public_key()}
    x = np.linspace(-1.0, 1.0, 256)
    ma = a.mask([x], roster)
    mb = b.mask([-x], roster)
    assert not np.any(np.isclose(FP.decode(ma.data), x, atol=1e-3))
    np.testing.assert_allclose(SecAggServer().aggregate({"a": ma, "b": mb})[0], 0.0, atol=2**-24)


def test_dropout_after_masking_is_recovered_exactly() -> None:
    rng = np.random.default_rng(3)
    inputs = {n: model(rng) for n in NODES}
    clients, masked = setup_round(inputs)
    # "charlie" masked its update but it never reached the server.
    del masked["charlie"]
    server = SecAggServer()
    with pytest.raises(SecAggError, match=r"pair seeds not revealed.*'charlie'"):
        server.aggregate(masked, dropped={"charlie"})
    revealed = {(s, "charlie"): clients[s].reveal_pair_seed("charlie") for s in masked}
    total = server.aggregate(masked, dropped={"charlie"}, revealed=revealed)
    # Exact in the ring: the result is bit-for-bit the sum of the survivors' encodings.
    ring_sum = sum(
        (FP.encode(flat(w)) for n, w in inputs.items() if n != "charlie"),
        start=np.zeros(512, dtype=np.uint64),
    )
    np.testing.assert_array_equal(flat(total), FP.decode(ring_sum))
    survivors = [w for n, w in inputs.items() if n != "charlie"]
    for got, want in zip(total, plain_sum(survivors), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    # Without the correction the raw sum is garbage: charlie's masks did not cancel.
    raw = FP.decode(sum((m.data for m in masked.values()), start=np.zeros(512, dtype=np.uint64)))
    assert np.median(np.abs(raw - flat(plain_sum(survivors)))) > 1e9


def test_two_dropouts() -> None:
    rng = np.random.default_rng(4)
    inputs = {n: model(rng) for n in NODES}
    clients, masked = setup_round(inputs)
    gone = {"alpha", "echo"}
    for d in gone:
        del masked[d]
    revealed = {(s, d): clients[s].reveal_pair_seed(d) for s in masked for d in gone}
    total = SecAggServer().aggregate(masked, dropped=gone, revealed=revealed)
    want = plain_sum([w for n, w in inputs.items() if n not in gone])
    for got, w in zip(total, want, strict=True):
        np.testing.assert_allclose(got, w, rtol=0, atol=TOL)


def test_too_few_survivors_is_refused() -> None:
    rng = np.random.default_rng(5)
    inputs = {n: model(rng) for n in ["a", "b", "c"]}
    clients, masked = setup_round(inputs)
    only = {"a": masked["a"]}
    revealed = {("a", d): clients["a"].reveal_pair_seed(d) for d in ("b", "c")}
    # Unmasking a "sum" of one update would hand the server that update in the clear.
    with pytest.raises(SecAggError, match="only 1 survivor"):
        SecAggServer().aggregate(only, dropped={"b", "c"}, revealed=revealed)
    total = SecAggServer(min_survivors=1).aggregate(only, dropped={"b", "c"}, revealed=revealed)
    np.testing.assert_allclose(flat(total), flat(inputs["a"]), atol=2**-24)


def test_different_rounds_give_different_masks() -> None:
    x = {n: [np.zeros(64)] for n in NODES[:3]}
    _, round1 = setup_round(x, round=1)
    _, round2 = setup_round(x, round=2)
    for n in x:
        assert not np.any(round1[n].data == round2[n].data)
    # Even with the same keys, the seed is bound to the round and to the pair.
    ka = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    kb = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    pa, pb = ka.public_key().public_bytes(*raw), kb.public_key().public_bytes(*raw)
    s_ab_1 = derive_pair_seed(ka, pb, 1, "a", "b")
    assert s_ab_1 == derive_pair_seed(kb, pa, 1, "b", "a")  # both ends agree
    assert s_ab_1 != derive_pair_seed(ka, pb, 2, "a", "b")  # new round, new seed
    assert s_ab_1 != derive_pair_seed(ka, pb, 1, "a", "c")  # another pair, another seed
    assert not np.any(
        mask_vector(s_ab_1, 32) == mask_vector(derive_pair_seed(ka, pb, 2, "a", "b"), 32)
    )


def test_pair_seeds_agree_between_the_two_ends() -> None:
    clients, _masked = setup_round({n: [np.ones(4)] for n in NODES[:3]})
    a, b = clients["alpha"], clients["bravo"]
    assert a.reveal_pair_seed("bravo") == b.reveal_pair_seed("alpha")
    assert a.reveal_pair_seed("bravo") != a.reveal_pair_seed("charlie")


def test_secure_fedavg_matches_plain_fedavg() -> None:
    rng = np.random.default_rng(6)
    updates = [
        Update(n, model(rng), num_examples=int(k))
        for n, k in zip(NODES, rng.integers(10, 500, 5), strict=True)
    ]
    clients = {u.node: SecAggClient(u.node, 3) for u in updates}
    roster = {n: c.public_key() for n, c in clients.items()}
    masked = {u.node: clients[u.node].mask_update(u, roster) for u in updates}
    avg, examples = SecAggServer().fedavg(masked)
    assert examples == sum(u.num_examples for u in updates)
    for got, want in zip(avg, fedavg(updates), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # With a dropout, the average is over the survivors only.
    del masked["delta"]
    revealed = {(s, "delta"): clients[s].reveal_pair_seed("delta") for s in masked}
    avg2, examples2 = SecAggServer().fedavg(masked, dropped={"delta"}, revealed=revealed)
    survivors = [u for u in updates if u.node != "delta"]
    assert examples2 == sum(u.num_examples for u in survivors)
    for got, want in zip(avg2, fedavg(survivors), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    with pytest.raises(SecAggError, match="use fedavg"):
        SecAggServer().aggregate(masked, dropped={"delta"}, revealed=revealed)


def test_fixed_point_round_trip_and_bounds() -> None:
    x = np.array([-2.5, 0.0, 1e-9, 3.14159265, -1e6])
    back = FP.decode(FP.encode(x))
    np.testing.assert_allclose(back, x, rtol=0, atol=2.0**-25)
    assert FP.limit(4) == 2.0**38 / 4
    a, b = SecAggClient("a", 1), SecAggClient("b", 1)
    roster = {"a": a.public_key(), "b": b.public_key()}
    with pytest.raises(SecAggError, match="fixed-point limit for 2 participants"):
        a.mask([np.array([2.0**38])], roster)
    with pytest.raises(SecAggError, match="frac_bits"):
        FixedPoint(60)


def test_client_protocol_guards() -> None:
    a, b = SecAggClient("a", 1), SecAggClient("b", 1)
    roster = {"a": a.public_key(), "b": b.public_key()}
    with pytest.raises(SecAggError, match="not masked anything"):
        a.reveal_pair_seed("b")
    with pytest.raises(SecAggError, match="at least two participants"):
        a.mask([np.ones(2)], {"a": a.public_key()})
    with pytest.raises(SecAggError, match="different public key for 'a'"):
        a.mask([np.ones(2)], {"a": b.public_key(), "b": b.public_key()})
    with pytest.raises(SecAggError, match="share a public key"):
        a.mask([np.ones(2)], {"b": b.public_key(), "c": b.public_key()})
    with pytest.raises(SecAggError, match="bad public key"):
        a.mask([np.ones(2)], {"b": b"short"})
    with pytest.raises(SecAggError, match="cannot mask the update of 'b'"):
        a.mask_update(Update("b", [np.ones(2)]), roster)
    a.mask([np.ones(2)], roster)
    # Masking a second input with the same masks would leak the difference of the two.
    with pytest.raises(SecAggError, match="already masked"):
        a.mask([np.zeros(2)], roster)
    with pytest.raises(SecAggError, match="with itself"):
        a.reveal_pair_seed("a")
    with pytest.raises(SecAggError, match="'z' was not a peer"):
        a.reveal_pair_seed("z")


def test_server_rejects_inconsistent_submissions() -> None:
    inputs = {n: [np.ones(3)] for n in ["a", "b", "c"]}
    clients, masked = setup_round(inputs, round=1)
    _, other_round = setup_round({"a": [np.ones(3)], "b": [np.ones(3)]}, round=2)
    server = SecAggServer()
    with pytest.raises(SecAggError, match="unaccounted: \\['c'\\]"):
        server.aggregate({"a": masked["a"], "b": masked["b"]})
    with pytest.raises(SecAggError, match=r"disagrees .* on round"):
        server.aggregate({"a": masked["a"], "b": other_round["b"], "c": masked["c"]})
    with pytest.raises(SecAggError, match="filed under 'b' comes from 'a'"):
        server.aggregate({"a": masked["a"], "b": masked["a"], "c": masked["c"]})
    with pytest.raises(SecAggError, match="both sent and dropped"):
        server.aggregate(masked, dropped={"c"})
    with pytest.raises(SecAggError, match="not \\(survivor, dropped\\)"):
        server.aggregate(masked, revealed={("a", "b"): clients["a"].reveal_pair_seed("b")})
    with pytest.raises(SecAggError, match="use aggregate"):
        server.fedavg(masked)


def test_secure_sum_of_clipped_changes_then_noise() -> None:
    """DP over secure aggregation: nodes clip locally, the server noises the masked sum."""
    rng = np.random.default_rng(8)
    changes = {n: [rng.normal(size=50) * 10] for n in NODES}
    clipped = {n: clip_update(d, max_norm=1.0) for n, d in changes.items()}
    _, masked = setup_round(clipped, round=9)
    total = SecAggServer().aggregate(masked)
    for got, want in zip(total, plain_sum(list(clipped.values())), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert np.linalg.norm(total[0]) <= len(NODES) * 1.0 + TOL
    noisy = add_gaussian_noise(total, noise_multiplier=1.0, max_norm=1.0, rng=rng)
    assert noisy[0].shape == (50,)
    assert not np.allclose(noisy[0], total[0])
