r"""The ``Model`` base class and a model artifact's bytes: the header, ``save``/``to_bytes``.

A trained model crosses every boundary of flowfed (the engine's artifact store, the
tool-side runtime, a node's channel) as the same bytes: a header naming its class, then
what its ``save`` (or ``to_bytes``) wrote. This module is that format and nothing else,
so the engine, the runtime and the materializers share one reading of it without
pulling in the tool registry.

Example:
    >>> class Weights:
    ...     def to_bytes(self):
    ...         return b"w"
    ...     @classmethod
    ...     def from_bytes(cls, data):
    ...         return cls()
    >>> data = model_header(Weights()) + model_bytes(Weights(), Path("unused"))
    >>> data.startswith(MODEL_MAGIC), data.endswith(b":Weights\nw")
    (True, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

#: The first bytes of a model artifact; a header line ``module:QualName`` follows, then
#: what the model's ``save`` wrote. The engine and the tool-side runtime both read it.
MODEL_MAGIC = b"FFMODEL1\n"


def model_header(value: object) -> bytes:
    """The header of ``value``'s model artifact: magic, then its class path and a newline."""
    cls = type(value)
    return MODEL_MAGIC + f"{cls.__module__}:{cls.__qualname__}".encode() + b"\n"


def split_model_bytes(data: bytes) -> tuple[Any, bytes]:
    """``(class, body)`` of a model artifact's bytes (ValueError without the header)."""
    import importlib

    if not data.startswith(MODEL_MAGIC):
        raise ValueError("not a flowfed model artifact (bad header)")
    end = data.index(b"\n", len(MODEL_MAGIC))
    module, _, qualname = data[len(MODEL_MAGIC) : end].decode().partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj, data[end + 1 :]


def model_to_bytes(value: object) -> bytes | None:
    """What ``value.save`` would write, from its optional ``to_bytes()``; None without one.

    Models are handed from task to task many times per federated round. A model that can
    serialize in memory spares each hand-off a file written, read back and removed.
    """
    fn = getattr(value, "to_bytes", None)
    if callable(fn) and callable(getattr(type(value), "from_bytes", None)):
        data = fn()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"{type(value).__qualname__}.to_bytes() must return bytes, "
                f"not {type(data).__name__}"
            )
        return bytes(data)
    return None


def model_bytes(value: object, path: Path) -> bytes:
    """The bytes of model ``value``: its ``to_bytes()``, else what ``value.save(path)``
    writes (read back, then removed).

    Raises TypeError when ``to_bytes()`` returns something else than bytes, ValueError when
    ``save`` does not write a single file at ``path``.

    Example:
        >>> import tempfile
        >>> class M:
        ...     def save(self, path):
        ...         open(path, "wb").write(b"w")
        >>> model_bytes(M(), Path(tempfile.mkdtemp()) / "m.model")
        b'w'
    """
    body = model_to_bytes(value)
    if body is not None:
        return body
    try:
        value.save(path)  # type: ignore[attr-defined]
        if not path.is_file():
            cls = type(value)
            raise ValueError(
                f"{cls.__module__}:{cls.__qualname__}.save(path) must write a single file at path"
            )
        return path.read_bytes()
    finally:
        if path.is_dir():  # a save that wrote a folder: refused above, not left behind
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def model_from_bytes(cls: Any, data: bytes) -> Any:
    """``cls.from_bytes(data)`` when the class has both halves of the bytes form, else
    :data:`NotImplemented` (the caller then goes through a file and ``cls.load``)."""
    fn = getattr(cls, "from_bytes", None)
    if callable(fn) and callable(getattr(cls, "to_bytes", None)):
        return fn(data)
    return NotImplemented


class Model:
    """Base class for trained models: persisted only through ``save`` / ``load``.

    An ``analysis`` tool must return at least one ``Model``. Subclasses write their
    weights to one file and read them back, so a model artifact is reproducible and
    portable across versions of the code that did not change the format.

    A subclass may also define ``to_bytes()`` and the classmethod ``from_bytes(data)``,
    returning and reading exactly what ``save`` writes. flowfed then keeps the model in
    memory when it stores or hands it on (no file written and read back per hand-off); a
    model with only ``save``/``load`` works the same, through a scratch file.

    Example:
        >>> import json, tempfile, os
        >>> class Threshold(Model):
        ...     def __init__(self, t: float) -> None:
        ...         self.t = t
        ...     def save(self, path):
        ...         Path(path).write_text(json.dumps({"t": self.t}))
        ...     @classmethod
        ...     def load(cls, path):
        ...         return cls(json.loads(Path(path).read_text())["t"])
        >>> d = tempfile.mkdtemp(); Threshold(0.3).save(os.path.join(d, "m"))
        >>> Threshold.load(os.path.join(d, "m")).t
        0.3
    """

    __flowfed_model__: ClassVar[bool] = True

    def save(self, path: str | Path) -> None:
        """Write the model (weights included) to the file ``path``."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read a model written by :meth:`save`."""
        raise NotImplementedError
