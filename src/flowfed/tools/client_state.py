"""Per-client state: numpy arrays a trainer keeps on its node from one round to the next.

A federated trainer reads and writes its node's state through ``ctx.client_state``, a
dict of numpy arrays (SCAFFOLD's control variate ``c_i``, a personalized head, a
running statistic). The node keeps it in its own storage between the step's rounds,
keyed by the run (or, with ``federated: {client_state: keep}``, the flow), the step, the
node and the dataset; it never travels to the server. Only numeric and boolean arrays
are allowed, and they are stored as ``.npz`` without pickle, so loading a state cannot
run code.

Example:
    >>> import numpy as np
    >>> state = ClientState()
    >>> state["c"] = np.zeros(3)
    >>> ClientState.from_bytes(state.to_bytes())["c"]
    array([0., 0., 0.])
    >>> state.changed
    True
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


class ClientStateError(ValueError):
    """A value that cannot be kept as client state, or state bytes that cannot be read."""


class ClientState(dict[str, np.ndarray]):
    """A node's state for one federated step: ``{name: numpy array}``.

    Setting a key copies the value into a numeric numpy array (an object array, which
    would need pickle, is refused with the key's name); ``changed`` says whether the
    tool wrote anything, so an untouched state is not written back.
    """

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        super().__init__()
        for key, value in (values or {}).items():
            super().__setitem__(key, _checked(key, value))
        self.changed = False

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _checked(key, value))
        self.changed = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed = True

    def clear(self) -> None:
        super().clear()
        self.changed = True

    def pop(self, key: str, *default: Any) -> Any:
        self.changed = True
        return super().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> np.ndarray:
        if key not in self:
            self[key] = default
        return self[key]

    def to_bytes(self) -> bytes:
        """The state as ``.npz`` bytes (no pickle)."""
        buf = io.BytesIO()
        np.savez(buf, **dict(self.items()))  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState:
        """A state back from :meth:`to_bytes` (pickled arrays are refused)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return cls({k: npz[k] for k in npz.files})
        except (ValueError, OSError) as exc:
            raise ClientStateError(f"client state cannot be read: {exc}") from None


def _checked(key: Any, value: Any) -> np.ndarray:
    if not isinstance(key, str) or not key:
        raise ClientStateError(f"client state keys are non-empty strings, got {key!r}")
    arr = np.array(value, copy=True)
    if arr.dtype.kind not in "biufc":
        raise ClientStateError(
            f"client state '{key}' must be a numeric array, got dtype {arr.dtype} "
            "(only numbers are kept: the node stores them without pickle)"
        )
    return arr
