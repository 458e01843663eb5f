"""Row ids for tasks and artifacts, cheap enough for the engine's hot path.

``uuid.uuid4()`` asks the kernel for 16 random bytes on every call, and releases the GIL to
do it: with the database writer thread waiting for the GIL, each call could hand it over
and wait to get it back, which cost more than scheduling a trivial task. An id here is
32 hex digits like ``uuid4().hex``:

- the first 12 are a per-process counter, started at a random value and scrambled by a
  multiplication modulo 2**48 (a bijection, so they never repeat within a process, and
  consecutive ids differ early: users name ids by short prefixes, ``flowfed artifacts
  show 3f9a``, and a plain counter would make those prefixes ambiguous);
- the last 20 are drawn once per process (80 random bits), which keeps ids of different
  processes apart.

Ids are not secrets: anything that must be unguessable (tokens, session ids) uses
:mod:`secrets`.

Example:
    >>> from flowfed.ids import new_id
    >>> a, b = new_id(), new_id()
    >>> len(a), a != b, a[12:] == b[12:], a[:4] != b[:4]
    (32, True, True, True)
"""

from __future__ import annotations

import itertools
import os

_MASK = (1 << 48) - 1
#: An odd multiplier (the 48-bit golden ratio): multiplication by it permutes 0..2**48-1.
_SCRAMBLE = 0x9E3779B97F4B

_state: list[object] = []


def _reseed() -> None:
    # A forked child must not continue its parent's sequence under the same suffix.
    start = int.from_bytes(os.urandom(6), "big")
    _state[:] = [os.urandom(10).hex(), itertools.count(start)]


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A new 32-hex-digit id, unique across processes (see the module docstring)."""
    suffix, counter = _state
    # next() on itertools.count is atomic under the GIL: threads never share a value.
    n = next(counter)  # type: ignore[call-overload]
    return f"{(n * _SCRAMBLE) & _MASK:012x}{suffix}"
