"""flowfed.artifacts: fingerprints, code hashes, cache keys, materializers, store, handles."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from flowfed.artifacts import (
    UNHASHABLE,
    ArtifactCorrupted,
    ArtifactHandle,
    ArtifactStore,
    Materialized,
    NotMaterializable,
    code_hash,
    fingerprint,
    load,
    materialize,
)
from flowfed.engine.cache import cache_key


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Config(pydantic.BaseModel):
    lr: float
    layers: list[int]


class TinyModel:
    """A user model following the save/load protocol."""

    __flowfed_model__ = True

    def __init__(self, weights: list[float]) -> None:
        self.weights = weights

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.weights))

    @classmethod
    def load(cls, path: Path) -> TinyModel:
        return cls(json.loads(Path(path).read_text()))


class MemoryModel(TinyModel):
    """A user model with the in-memory form too; its file methods must not be used."""

    def save(self, path: Path) -> None:
        raise AssertionError("save(path) called although to_bytes() exists")

    @classmethod
    def load(cls, path: Path) -> MemoryModel:
        raise AssertionError("load(path) called although from_bytes() exists")

    def to_bytes(self) -> bytes:
        return json.dumps(self.weights).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemoryModel:
        return cls(json.loads(data))


class OnlyToBytes(TinyModel):
    def to_bytes(self) -> bytes:
        raise AssertionError("to_bytes() used without from_bytes()")


class NotBytes(MemoryModel):
    def to_bytes(self) -> bytes:
        return "[1.0]"  # type: ignore[return-value]


class SavesAFolder(TinyModel):
    def save(self, path: Path) -> None:
        Path(path).mkdir()
        (Path(path) / "weights.json").write_text(json.dumps(self.weights))


class SavesNothing(TinyModel):
    def save(self, path: Path) -> None:
        pass


SAMPLE = {"b": [1, 2.5, None, True], "a": {"nested": ("t", b"x")}, "s": {3, 1, 2}}


# -- fingerprint ------------------------------------------------------------------------


def test_fingerprint_canonical() -> None:
    fp = fingerprint(SAMPLE)
    assert isinstance(fp, str) and len(fp) == 64
    reordered = {"s": {2, 3, 1}, "a": {"nested": ("t", b"x")}, "b": [1, 2.5, None, True]}
    assert fingerprint(reordered) == fp
    assert fingerprint([1, 2]) == fingerprint((1, 2))  # JSON round trips keep fingerprints
    assert fingerprint(1) != fingerprint(1.0) != fingerprint(True)
    assert fingerprint("1") != fingerprint(1) and fingerprint(b"1") != fingerprint("1")
    assert fingerprint(float("nan")) == fingerprint(float("nan"))
    assert fingerprint(["ab", "c"]) != fingerprint(["a", "bc"])


def test_fingerprint_stable_across_processes() -> None:
    script = textwrap.dedent(
        """
        from flowfed.artifacts import fingerprint
        print(fingerprint({"b": [1, 2.5, None, True], "a": {"nested": ("t", b"x")},
                           "s": {3, 1, 2}}))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == fingerprint(SAMPLE)


def test_fingerprint_rich_types(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.astype(np.float64))
    assert fingerprint(a) != fingerprint(a.reshape(3, 2))
    assert fingerprint(np.asfortranarray(a)) == fingerprint(a)
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert fingerprint(df) == fingerprint(df.copy())
    assert fingerprint(df) != fingerprint(df.assign(x=[1, 3]))
    assert fingerprint(df) != fingerprint(df.rename(columns={"y": "z"}))
    assert fingerprint(Point(1, 2.0)) == fingerprint(Point(1, 2.0)) != fingerprint(Point(1, 3.0))
    assert fingerprint(Config(lr=0.1, layers=[1])) != fingerprint(Config(lr=0.2, layers=[1]))
    f = tmp_path / "data.csv"
    f.write_text("a,b\n1,2\n")
    fp = fingerprint(f)
    g = tmp_path / "copy.csv"
    g.write_text("a,b\n1,2\n")
    assert fingerprint(g) == fp
    f.write_text("a,b\n1,3\n")
    assert fingerprint(f) != fp


def test_fingerprint_unhashable() -> None:
    assert fingerprint(object()) is UNHASHABLE
    assert fingerprint({"cfg": [1, object()]}) is UNHASHABLE
    assert fingerprint(lambda: 1) is UNHASHABLE
    assert fingerprint(Path("/definitely/not/here")) is UNHASHABLE
    assert not UNHASHABLE and repr(UNHASHABLE) == "UNHASHABLE"


# -- code hash and cache key ------------------------------------------------------------

BASE = '''
@decorator(version="1")
def train(x, lr=0.1):
    """Train it."""
    y = x * lr  # scale
    return y + 1
'''
COSMETIC = '''
@other_decorator
def train(x,
          lr=0.1):
    # a comment only
    """A different docstring."""

    y = x * lr
    return y + 1
'''
LOGIC = """
def train(x, lr=0.1):
    y = x * lr
    return y + 2
"""


def _compile(src: str, tmp_path: Path, name: str) -> Any:
    """Define ``train`` from a real file so inspect.getsource can find it."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "def decorator(**kw):\n    return lambda f: f\nother_decorator = decorator()\n" + src
    )
    ns: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    return ns["train"]


def test_code_hash(tmp_path: Path) -> None:
    base = code_hash(_compile(BASE, tmp_path, "base"))
    assert code_hash(_compile(COSMETIC, tmp_path, "cosmetic")) == base
    assert code_hash(_compile(LOGIC, tmp_path, "logic")) != base


def test_code_hash_without_source() -> None:
    ns: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1\ndef g(x):\n    return x + 2\n", ns)
    hf, hg = code_hash(ns["f"]), code_hash(ns["g"])
    assert hf != hg and len(hf) == 64
    ns2: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1\n", ns2)
    assert code_hash(ns2["f"]) == hf


def test_cache_key() -> None:
    k = cache_key("tools.train", "1", "c0de", {"lr": 0.1}, {"data": "h1"})
    assert k is not None and len(k) == 64
    assert cache_key("tools.train", "1", "c0de", {"lr": 0.1}, {"data": "h1"}) == k
    assert cache_key("tools.train", "2", "c0de", {"lr": 0.1}, {"data": "h1"}) != k
    assert cache_key("tools.train", "1", "c0de", {"lr": 0.2}, {"data": "h1"}) != k
    assert cache_key("tools.train", "1", "c0de", {"lr": 0.1}, {"data": "h2"}) != k
    assert cache_key("tools.train", "1", "beef", {"lr": 0.1}, {"data": "h1"}) != k
    assert cache_key("tools.train", "1", "c0de", {"cb": object()}, {}) is None


# -- materializers ----------------------------------------------------------------------


def _roundtrip(value: Any, **kw: Any) -> tuple[Materialized, Any]:
    m = materialize(value, **kw)
    return m, load(m.kind, m.data, m.meta)


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, "héllo \ud800", [1, "a", None], {"a": {"b": [1.5, float("inf")]}}],
)
def test_json_roundtrip(value: Any) -> None:
    m, back = _roundtrip(value)
    assert m.kind == "json" and not m.pickled
    assert back == value
    assert m.hash == materialize(value).hash  # deterministic


def test_json_canonical_and_tuple() -> None:
    assert materialize({"b": 1, "a": 2}).data == b'{"a":2,"b":1}'
    assert materialize({"b": 1, "a": 2}).hash == materialize({"a": 2, "b": 1}).hash
    m, back = _roundtrip((1, 2))
    assert m.kind == "json" and m.type_name == "tuple" and back == [1, 2]
    m, back = _roundtrip(float("nan"))
    assert m.kind == "json" and back != back
    # Non-str keys are not faithful JSON: they need another materializer.
    with pytest.raises(NotMaterializable):
        materialize({1: "a"})


def test_numpy_pandas_bytes_roundtrip() -> None:
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    m, back = _roundtrip(arr)
    assert m.kind == "numpy" and m.meta == {"dtype": "<i2", "shape": [3, 4]}
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == arr.dtype

    df = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", None], "z": [0.5, 1.5, 2.5]})
    df.index = pd.Index([10, 20, 30], name="idx")
    m, back = _roundtrip(df)
    assert m.kind == "pandas" and m.type_name == "pandas.DataFrame"
    pd.testing.assert_frame_equal(back, df)

    for raw in (b"\x00\x01", bytearray(b"xy")):
        m, back = _roundtrip(raw)
        assert m.kind == "bytes" and back == bytes(raw)


def test_file_model_pickle_roundtrip(tmp_path: Path) -> None:
    f = tmp_path / "report.csv"
    f.write_text("a,b\n1,2\n")
    m, back = _roundtrip(f)
    assert m.kind == "file" and isinstance(back, Path)
    assert back.name == "report.csv" and back.read_text() == "a,b\n1,2\n"

    m, back = _roundtrip(TinyModel([0.5, 1.5]))
    assert m.kind == "model" and m.meta["class"].endswith(":TinyModel")
    assert isinstance(back, TinyModel) and back.weights == [0.5, 1.5]

    with pytest.raises(NotMaterializable) as info:
        materialize(Point(1, 2.0))
    assert "Point" in str(info.value) and "allow_pickle=True" in str(info.value)

    m, back = _roundtrip(Point(1, 2.0), allow_pickle=True)
    assert m.kind == "pickle" and m.pickled and back == Point(1, 2.0)

    obj_arr = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(NotMaterializable):
        materialize(obj_arr)
    m = materialize(obj_arr, allow_pickle=True)
    assert m.kind == "pickle"


def test_model_in_memory_form(tmp_path: Path) -> None:
    # to_bytes/from_bytes, when a model has both, replace the file round trip.
    m, back = _roundtrip(MemoryModel([0.25, 2.0]))
    assert m.kind == "model" and m.meta["class"].endswith(":MemoryModel")
    assert m.data.endswith(b"[0.25, 2.0]")
    assert isinstance(back, MemoryModel) and back.weights == [0.25, 2.0]

    # Half of the pair is no pair: the file methods are used.
    m, back = _roundtrip(OnlyToBytes([1.0]))
    assert isinstance(back, OnlyToBytes) and back.weights == [1.0]

    with pytest.raises(
        NotMaterializable, match=r"NotBytes\.to_bytes\(\) must return bytes, not str"
    ):
        materialize(NotBytes([1.0]))

    # A save that writes no single file is refused by name, and leaves nothing behind,
    # in the engine and in the tool-side runtime alike.
    from flowfed.artifacts.materializers import _scratch_file
    from flowfed.runtime.toolside import materialize_value

    scratch = _scratch_file().parent
    for bad in (SavesAFolder([1.0]), SavesNothing([1.0])):
        name = type(bad).__qualname__
        with pytest.raises(NotMaterializable, match=rf"{name}\.save\(path\) must write a single"):
            materialize(bad)
        with pytest.raises(ValueError, match=rf"{name}\.save\(path\) must write a single"):
            materialize_value("model", bad, workdir=tmp_path)
    assert list(scratch.iterdir()) == [] and list(tmp_path.iterdir()) == []

    # The library's models: the same bytes as their file, so content hashes (and cache
    # keys downstream) do not depend on which way a model was stored.
    from flowfed.tools.library.models import LogisticRegressionModel

    model = LogisticRegressionModel(["a", "b"], [0.1, -2.5e-17], 0.3, training={"rows": 7})
    model.save(tmp_path / "model.json")
    m, back = _roundtrip(model)
    assert m.data.endswith((tmp_path / "model.json").read_bytes())
    assert back.weights.tolist() == [0.1, -2.5e-17] and back.bias == 0.3
    with pytest.raises(ValueError, match=r"expected a 'flowfed\.logistic_regression/1' model"):
        LogisticRegressionModel.from_bytes(b'{"format": "other"}')


# -- store ------------------------------------------------------------------------------


def test_store_put_get_dedupe(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    m = materialize({"v": 1})
    uri = store.put(m)
    obj = tmp_path / "store" / "objects" / m.hash[:2] / m.hash
    assert uri == obj.as_uri() and obj.read_bytes() == m.data
    assert store.exists(m.hash) and store.get(m.hash, verify=True) == m.data
    assert store.local_path(m.hash) == obj
    mtime = obj.stat().st_mtime_ns
    assert store.put(materialize({"v": 1})) == uri  # dedupe: not rewritten
    assert obj.stat().st_mtime_ns == mtime
    assert not store.exists("0" * 64) and store.local_path("0" * 64) is None
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    # file:// URLs are the same local fast path.
    assert ArtifactStore((tmp_path / "store").as_uri()).get(m.hash) == m.data


def test_store_atomic_no_temp_files(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "s"))
    values = [materialize(list(range(i % 7))) for i in range(200)]

    def worker() -> None:
        for v in values:
            store.put(v)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert len(files) == 7  # deduplicated
    assert not [p for p in files if p.name.endswith(".tmp")]
    for p in files:
        assert store.get(p.name, verify=True)

    # A failed write leaves nothing behind.
    bad = Materialized("bytes", "bytes", b"x", "ab" * 32)

    def failing_write(fd: int, data: Any) -> int:
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", failing_write)
        with pytest.raises(OSError, match="disk full"):
            store.put(bad)
    assert not store.exists(bad.hash)
    assert not [p for p in (tmp_path / "s").rglob("*.tmp")]


def test_store_detects_corruption(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    m = materialize(b"payload")
    store.put(m)
    path = store.local_path(m.hash)
    assert path is not None
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted):
        store.get(m.hash, verify=True)


def test_memory_store() -> None:
    store = ArtifactStore("memory://flowfed-test-store")
    m = materialize(np.ones(3))
    uri = store.put(m)
    assert uri.startswith("memory://") and m.hash in uri
    assert store.exists(m.hash) and store.get(m.hash, verify=True) == m.data
    assert store.put(m) == uri
    assert store.local_path(m.hash) is None
    h = ArtifactHandle(
        store,
        id="i",
        name="ones",
        hash=m.hash,
        size=m.size,
        kind=m.kind,
        type_name=m.type_name,
        uri=uri,
    )
    np.testing.assert_array_equal(h.load(), np.ones(3))
    assert h.path is None


# -- handle -----------------------------------------------------------------------------


class SpyStore(ArtifactStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gets = 0

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        self.gets += 1
        return super().get(hash, verify=verify)


def test_handle_is_lazy(tmp_path: Path) -> None:
    store = SpyStore(str(tmp_path))
    m = materialize({"weights": [1, 2, 3]})
    uri = store.put(m)
    row = {
        "id": "a1",
        "name": "model",
        "version": 2,
        "hash": m.hash,
        "size": m.size,
        "kind": m.kind,
        "type_name": m.type_name,
        "uri": uri,
        "meta": m.meta,
    }
    h = ArtifactHandle.from_row(store, row)
    assert (h.name, h.version, h.kind, h.size) == ("model", 2, "json", m.size)
    assert h.path == tmp_path / "objects" / m.hash[:2] / m.hash
    assert store.gets == 0 and h.reads == 0 and not h.loaded
    assert h.load() == {"weights": [1, 2, 3]}
    assert h.load() == {"weights": [1, 2, 3]}
    assert store.gets == 1 and h.reads == 1 and h.loaded

    value = {"in": "memory"}
    h2 = ArtifactHandle.from_row(store, row, value=value)
    assert h2.load() is value and store.gets == 1 and h2.reads == 0
    assert "model:2" in repr(h2)


SHAPES = '''
def long_signature(
    a0: int,
    a1: int,
    a2: int = 3,
) -> int:
    """Docs."""
    return (
        a0
        + a1
        + a2
    )  # a comment after the last instruction's line


@other_decorator
@decorator(
    k=1,
)
def decorated(x):
    def inner(y):
        return [
            y,
            y,
        ]

    return inner(x)


class Holder:
    def method(self, x):
        return {
            "x": x,
        }
'''


def test_code_hash_reads_the_same_source_as_inspect(tmp_path: Path) -> None:
    # code_hash slices a function's source by its code positions rather than tokenizing
    # with inspect: for every shape of definition the hash must be the one inspect's
    # source gives (the AST of the whole definition, decorators dropped).
    import ast
    import hashlib
    import inspect
    import textwrap

    from flowfed.artifacts.codehash import source_hash
    from flowfed.artifacts.hashing import _strip

    path = tmp_path / "shapes.py"
    path.write_text(
        "def decorator(**kw):\n    return lambda f: f\nother_decorator = decorator()\n" + SHAPES
    )
    ns: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    for fn in (ns["long_signature"], ns["decorated"], ns["Holder"].method):
        tree = _strip(ast.parse(textwrap.dedent(inspect.getsource(fn))))
        for node in tree.body:
            node.decorator_list = []  # type: ignore[attr-defined]
        dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
        expected = hashlib.sha256(b"ast\0" + dumped.encode()).hexdigest()
        assert source_hash(fn, decorators=False) == expected, fn.__qualname__


def test_row_ids_are_unique_and_differ_early() -> None:
    import os
    import threading

    from flowfed.ids import new_id

    seen: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [new_id() for _ in range(5000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 20_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in seen)
    # Users name ids by short prefixes: 8 digits tell 20,000 ids of one process apart.
    assert len({i[:8] for i in seen}) == len(seen)
    # A forked child draws its own suffix, so its ids never meet the parent's.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    assert child[12:] != seen[0][12:] and child not in seen


def test_code_hash_of_a_very_deep_expression(tmp_path: Path) -> None:
    # A sum of 1,500 terms is an AST too deep for a recursive walk: the hash falls back to
    # the bytecode instead of failing the task (a W2 of 1,000 tasks hit this).
    terms = [f"a{i}" for i in range(1500)]
    params = ", ".join(terms)
    path = tmp_path / "deep.py"
    path.write_text(
        f"def plus({params}):\n    return {' + '.join(terms)}\n"
        f"def minus({params}):\n    return {' + '.join(terms[:-1])} - {terms[-1]}\n"
    )
    ns: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    assert len(code_hash(ns["plus"])) == 64
    assert code_hash(ns["plus"]) != code_hash(ns["minus"])
